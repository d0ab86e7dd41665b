"""Streaming stage: decode, matte, composite and encode video. Builds on spgim.runtime only."""
