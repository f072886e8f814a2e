"""Protocol-faithful stand-ins for the outside systems the tests cannot reach (identity providers)."""
