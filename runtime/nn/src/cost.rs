//! The fuel an inference call costs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tally_digest::Digest;
use tally_nn_tract::{Model, NnError, Signature};

/// Costs of `(graph, input signature)` pairs, computed with tract's static
/// analysis of the decluttered graph (multiply-adds, divisions and output
/// elements; see `tally_nn_tract`) and cached. Independent of the backend
/// that runs the call, the CPU and the clock.
#[derive(Default)]
pub struct CostModel {
    models: Mutex<HashMap<Digest, Arc<Mutex<Model>>>>,
    costs: Mutex<HashMap<(Digest, Signature), u64>>,
}

/// Distinct input signatures costed per graph (each needs a plan).
const MAX_SIGNATURES: usize = 64;

impl CostModel {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cost of running the graph `digest` (whose bytes are `bytes`) on
    /// inputs of signature `sig`.
    pub fn cost(&self, digest: &Digest, bytes: &[u8], sig: &Signature) -> Result<u64, NnError> {
        let key = (*digest, sig.clone());
        if let Some(c) = self
            .costs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(*c);
        }
        let model = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            match models.get(digest) {
                Some(m) => m.clone(),
                None => {
                    let m = Arc::new(Mutex::new(Model::load(bytes, MAX_SIGNATURES)?));
                    models.insert(*digest, m.clone());
                    m
                }
            }
        };
        let cost = model.lock().unwrap_or_else(|p| p.into_inner()).cost(sig)?;
        self.costs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, cost);
        Ok(cost)
    }
}
