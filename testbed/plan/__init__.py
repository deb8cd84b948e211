"""What a loaded topology becomes before anything starts: the device table, pool slices, arrivals, faults."""
