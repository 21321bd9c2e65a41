"""nameko extensions: the only place where gridflow's plumbing meets nameko."""
