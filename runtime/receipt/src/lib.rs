//! Tally receipts: claims, their canonical digest, seals and verification logic.
