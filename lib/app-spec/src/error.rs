//! One error type for every value grammar: which grammar, the value, what is
//! wrong with it, and (in the message) the syntax with a valid example.

use std::fmt;

/// The grammar a value failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    AppName,
    VolumeName,
    Path,
    Volume,
    Bind,
    Publish,
    Network,
    Restart,
    Cgroups,
    Memory,
    Cpus,
    Pids,
    Env,
    User,
}

impl What {
    /// What the value should have been.
    pub fn noun(self) -> &'static str {
        match self {
            What::AppName => "app name",
            What::VolumeName => "volume name",
            What::Path => "path",
            What::Volume => "volume",
            What::Bind => "bind mount",
            What::Publish => "published port",
            What::Network => "network",
            What::Restart => "restart policy",
            What::Cgroups => "cgroup placement",
            What::Memory => "memory size",
            What::Cpus => "number of CPUs",
            What::Pids => "process limit",
            What::Env => "environment variable",
            What::User => "user",
        }
    }

    /// The syntax, in one line.
    pub fn syntax(self) -> &'static str {
        match self {
            What::AppName => "[a-z0-9][a-z0-9-]*, at most 63 characters",
            What::VolumeName => "[a-z0-9][a-z0-9_.-]*, at most 64 characters",
            What::Path => "an absolute path without a \"..\" component, ':' or NUL",
            What::Volume => {
                "NAME:/path or /host/path:/path, optionally followed by :ro or :rw (NAME is [a-z0-9][a-z0-9_.-]*)"
            }
            What::Bind => "/host/path:/path, optionally followed by :ro or :rw",
            What::Publish => "HOST:CONTAINER[/tcp|/udp] with ports 1-65535",
            What::Network => "\"host\", \"private\" or \"none\"",
            What::Restart => "\"always\", \"on-failure\" or \"no\"",
            What::Cgroups => "\"separate\" or \"split\"",
            What::Memory => {
                "bytes, or a whole number with a k, M, G or T suffix (binary, optionally followed by B or iB), at least 6M"
            }
            What::Cpus => "a decimal number from 0.01 to 4096",
            What::Pids => "a whole number from 1 to 4194304",
            What::Env => "NAME=VALUE with NAME [A-Za-z_][A-Za-z0-9_]* and no NUL byte",
            What::User => {
                "user[:group], each a name or a number of at most 32 of [A-Za-z0-9_.-], not starting with '-'"
            }
        }
    }

    /// A valid value (or two).
    pub fn example(self) -> &'static str {
        match self {
            What::AppName => "\"web-1\"",
            What::VolumeName => "\"data\"",
            What::Path => "\"/srv/data\"",
            What::Volume => "\"data:/data\" or \"/srv/www:/www:ro\"",
            What::Bind => "\"/srv/www:/www:ro\"",
            What::Publish => "\"8080:80\" or \"53:53/udp\"",
            What::Network => "\"private\"",
            What::Restart => "\"on-failure\"",
            What::Cgroups => "\"split\"",
            What::Memory => "\"256M\" or \"1GiB\"",
            What::Cpus => "\"0.5\" or \"2\"",
            What::Pids => "\"200\"",
            What::Env => "\"LOG_LEVEL=debug\"",
            What::User => "\"1000:1000\" or \"nobody\"",
        }
    }
}

/// A value that does not follow its grammar. The message is one line:
/// `"5M" is not a valid memory size: below 6M; use …, like "256M" or "1GiB"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    what: What,
    input: String,
    problem: String,
}

impl Error {
    pub(crate) fn new(what: What, input: &str, problem: impl Into<String>) -> Self {
        Error {
            what,
            input: input.to_string(),
            problem: problem.into(),
        }
    }

    pub fn what(&self) -> What {
        self.what
    }

    /// The value as given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it, without the syntax and example.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid {}: {}; use {}, like {}",
            self.input,
            self.what.noun(),
            self.problem,
            self.what.syntax(),
            self.what.example()
        )
    }
}

impl std::error::Error for Error {}
