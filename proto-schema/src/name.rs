//! Camera, model and ring names: one rule, checked once where a name enters the system
//! (config, CLI, a request), then carried as a [`Name`].
//!
//! The rule, `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`, keeps every name safe as a file name
//! directly inside a directory (no `/`, no `..`, no hidden files) and as a command-line
//! argument or MQTT/Redis key segment (no leading `-`, no wildcards, no spaces).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name {name:?} is {len} bytes long, at most 64 allowed")]
    TooLong {
        /// The rejected name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The first character is not an ASCII letter or digit (so names can never be
    /// hidden files, `..`, or options).
    #[error("name {name:?} must start with an ASCII letter or digit")]
    BadFirstChar {
        /// The rejected name.
        name: String,
    },
    /// A character other than ASCII letters, digits, `_` and `-`.
    #[error("name {name:?} has invalid character {ch:?} at byte {index}")]
    InvalidChar {
        /// The rejected name.
        name: String,
        /// The offending character.
        ch: char,
        /// Its byte index.
        index: usize,
    },
}

/// Checks `name` against the rule; the one implementation of it.
pub fn validate(name: &str) -> Result<(), NameError> {
    let Some(first) = name.chars().next() else {
        return Err(NameError::Empty);
    };
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadFirstChar {
            name: name.to_owned(),
        });
    }
    if let Some((index, ch)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(NameError::InvalidChar {
            name: name.to_owned(),
            ch,
            index,
        });
    }
    Ok(())
}

/// A string that passed [`validate`]. Deserializing checks it too, so a `Name` field
/// in a config or message can never hold anything else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Checks `name` and wraps it.
    pub fn parse(name: impl Into<String>) -> Result<Name, NameError> {
        let name = name.into();
        validate(&name)?;
        Ok(Name(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Name::parse(value)
    }
}

impl From<Name> for String {
    fn from(value: Name) -> Self {
        value.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::parse(s)
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_rule_and_names_each_failure() {
        for ok in ["a", "cam1", "Cam-01_x", "0", &"z".repeat(64)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
            assert_eq!(Name::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(validate(""), Err(NameError::Empty));
        assert!(matches!(
            validate(&"x".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        for bad in ["-rf", "_x", ".hidden", "..", "/etc"] {
            assert!(
                matches!(validate(bad), Err(NameError::BadFirstChar { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            validate("cam/../x"),
            Err(NameError::InvalidChar {
                ch: '/',
                index: 3,
                ..
            })
        ));
        assert!(matches!(
            validate("caméra"),
            Err(NameError::InvalidChar { index: 3, .. })
        ));
    }

    #[test]
    fn serde_validates() {
        assert_eq!(
            serde_json::from_str::<Name>("\"cam1\"").unwrap().as_str(),
            "cam1"
        );
        assert!(serde_json::from_str::<Name>("\"../x\"").is_err());
        assert_eq!(
            serde_json::to_string(&Name::parse("cam1").unwrap()).unwrap(),
            "\"cam1\""
        );
    }

    proptest! {
        #[test]
        fn valid_names_are_plain_file_names(s in "\\PC{0,80}") {
            if validate(&s).is_ok() {
                prop_assert!(!s.is_empty() && s.len() <= MAX_NAME_LEN);
                prop_assert!(!s.contains('/') && !s.starts_with('.') && !s.starts_with('-'));
                prop_assert_eq!(std::path::Path::new(&s).file_name().and_then(|f| f.to_str()), Some(s.as_str()));
            }
        }
    }
}
