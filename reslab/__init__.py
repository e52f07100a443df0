"""reslab."""
