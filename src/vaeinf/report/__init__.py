"""From the runs' metrics.json to the paper: tidy tables, variables and claims, tables, figures
and the paper itself; never imports torch."""
