"""Models: the frozen trunks, the two heads, and the one training recipe they share."""
