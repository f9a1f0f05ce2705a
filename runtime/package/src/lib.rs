//! Tally package bundles: packing, signing and safely reading single-file packages.
