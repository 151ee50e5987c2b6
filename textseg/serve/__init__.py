"""HTTP services around textseg."""
