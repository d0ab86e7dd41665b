"""Runtime stage: exported SPD/SPGM artifacts behind one interface. Never imports spgim.train."""
