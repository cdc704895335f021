//! Linearizability verdicts for the models' client histories against
//! [`CasRegister`].
//!
//! Guarantee: [`Verdicts::is_linearizable`] is stateright's
//! `LinearizabilityTester` judgement, computed once per distinct history
//! (many model states share one history, and the check backtracks).

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use stateright::semantics::LinearizabilityTester;

use crate::register_spec::CasRegister;

/// A client-observed history: invocations and returns per thread `T`.
pub type History<T> = LinearizabilityTester<T, CasRegister>;

/// Linearizability verdicts by history. Clones share the cache.
#[derive(Debug)]
pub struct Verdicts<T>(Arc<Mutex<HashMap<History<T>, bool>>>);

impl<T> Clone for Verdicts<T> {
    fn clone(&self) -> Self {
        Verdicts(Arc::clone(&self.0))
    }
}

impl<T> Default for Verdicts<T> {
    fn default() -> Self {
        Verdicts(Arc::default())
    }
}

impl<T: Copy + Debug + Ord + Hash> Verdicts<T> {
    pub fn is_linearizable(&self, history: &History<T>) -> bool {
        let mut verdicts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&verdict) = verdicts.get(history) {
            return verdict;
        }
        let verdict = history.serialized_history().is_some();
        verdicts.insert(history.clone(), verdict);
        verdict
    }
}
