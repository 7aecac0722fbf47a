"""The paper: its generated setup section, the manuscript check and the preview without Quarto."""
