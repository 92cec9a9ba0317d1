"""What a reviewer reads: the data report, the comparison's Markdown and plots, and the baseline."""
