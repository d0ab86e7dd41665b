"""Cluster stage: ``spgim batch`` mattes many inputs on Ray. Builds on spgim.streaming and spgim.runtime only."""
