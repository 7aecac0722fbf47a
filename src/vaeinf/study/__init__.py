"""The study: its grid (torch-free), the cost rule, and the jobs the workflow runs."""
