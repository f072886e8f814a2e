"""People: accounts, passwords, web sessions, sign-in limits, single-use links, grants, and the one access check."""
