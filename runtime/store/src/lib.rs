//! Tally local store: content-addressed blobs and an embedded index.
