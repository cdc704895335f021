//! The sequential specification the client-retry model is checked against:
//! one register supporting put, compare-and-swap and read, with the return
//! values Flotilla gives its clients.
//!
//! Guarantee: [`CasRegister`] is the reference object of a linearizability
//! check; a history is accepted only if some total order of its operations,
//! respecting real time, replays against it with the same returns.

use std::fmt;

use stateright::semantics::SequentialSpec;

/// A register value: the bytes stored under the register's key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub Vec<u8>);

impl Value {
    pub fn from_str_bytes(text: &str) -> Value {
        Value(text.as_bytes().to_vec())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// An operation a client invokes on the register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisterOp {
    Put(Value),
    /// If the register holds `expected` (`None` = absent), set it to `new`.
    Cas {
        expected: Option<Value>,
        new: Value,
    },
    Read,
}

/// What an operation returned to the client.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisterRet {
    PutOk,
    /// `previous` is the value the CAS compared against, whether or not it
    /// succeeded.
    CasOk {
        succeeded: bool,
        previous: Option<Value>,
    },
    ReadOk(Option<Value>),
}

/// The reference register: `None` while absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CasRegister(pub Option<Value>);

impl SequentialSpec for CasRegister {
    type Op = RegisterOp;
    type Ret = RegisterRet;

    fn invoke(&mut self, op: &RegisterOp) -> RegisterRet {
        match op {
            RegisterOp::Put(value) => {
                self.0 = Some(value.clone());
                RegisterRet::PutOk
            }
            RegisterOp::Cas { expected, new } => {
                let previous = self.0.clone();
                let succeeded = previous == *expected;
                if succeeded {
                    self.0 = Some(new.clone());
                }
                RegisterRet::CasOk {
                    succeeded,
                    previous,
                }
            }
            RegisterOp::Read => RegisterRet::ReadOk(self.0.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Value {
        Value::from_str_bytes(text)
    }

    #[test]
    fn cas_succeeds_only_on_the_expected_value() {
        let mut register = CasRegister::default();
        let cas_from_absent = RegisterOp::Cas {
            expected: None,
            new: v("a"),
        };
        assert_eq!(
            register.invoke(&cas_from_absent),
            RegisterRet::CasOk {
                succeeded: true,
                previous: None
            }
        );
        assert_eq!(
            register.invoke(&cas_from_absent),
            RegisterRet::CasOk {
                succeeded: false,
                previous: Some(v("a"))
            }
        );
        assert_eq!(
            register.invoke(&RegisterOp::Put(v("b"))),
            RegisterRet::PutOk
        );
        assert_eq!(
            register.invoke(&RegisterOp::Read),
            RegisterRet::ReadOk(Some(v("b")))
        );
    }

    #[test]
    fn a_cas_that_observes_its_own_write_is_not_a_valid_history() {
        assert!(!CasRegister::default().is_valid_history([(
            RegisterOp::Cas {
                expected: None,
                new: v("a")
            },
            RegisterRet::CasOk {
                succeeded: false,
                previous: Some(v("a"))
            },
        )]));
    }
}
