//! Native tree copy (being written).
