//! Tally sandbox: the only crate that knows wasmtime; runs packages deterministically and metered.
