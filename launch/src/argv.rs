//! Writing an argument vector flag by flag.

use std::ffi::{OsStr, OsString};

/// An argument vector under construction.
#[derive(Debug, Default)]
pub(crate) struct Argv(pub(crate) Vec<OsString>);

impl Argv {
    /// `--flag value`; `--flag=value` when the value starts with `-`, which clap would
    /// otherwise read as the next flag.
    pub(crate) fn opt(&mut self, flag: &str, value: impl AsRef<OsStr>) {
        let value = value.as_ref();
        if value.as_encoded_bytes().first() == Some(&b'-') {
            let mut joined = OsString::from(format!("{flag}="));
            joined.push(value);
            self.0.push(joined);
        } else {
            self.0.push(flag.into());
            self.0.push(value.to_os_string());
        }
    }

    /// `--flag value` when `value` is set.
    pub(crate) fn some<T: ToString>(&mut self, flag: &str, value: Option<T>) {
        if let Some(v) = value {
            self.opt(flag, v.to_string());
        }
    }

    /// `--flag value` when `value` differs from the flag's default.
    pub(crate) fn non_default<T: PartialEq + ToString>(
        &mut self,
        flag: &str,
        value: T,
        default: T,
    ) {
        if value != default {
            self.opt(flag, value.to_string());
        }
    }

    /// The bare `--flag` when `on`.
    pub(crate) fn switch(&mut self, flag: &str, on: bool) {
        if on {
            self.0.push(flag.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyphen_values_are_joined_to_their_flag() {
        let mut a = Argv::default();
        a.opt("--av-option", "-x=1");
        a.opt("--ring", "cam");
        a.switch("--fast", false);
        a.switch("--loop", true);
        a.non_default("--slots", 8, 8);
        a.some("--width", Some(640));
        assert_eq!(
            a.0,
            [
                "--av-option=-x=1",
                "--ring",
                "cam",
                "--loop",
                "--width",
                "640"
            ]
        );
    }
}
