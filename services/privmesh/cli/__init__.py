"""The `privmesh` command line."""
