"""spgim.serving: SPG-IM behind a real Triton Inference Server (model repository, server process, ``spgim serve``)."""
