"""privmesh."""
