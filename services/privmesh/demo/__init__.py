"""The end-to-end scenario of DESIGN.md, run against a local mesh by `privmesh demo`."""
