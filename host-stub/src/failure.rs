//! How a command fails: exit status 2 for bad usage or config, 1 for runtime failures.

pub enum Failure {
    /// Bad usage or bad config: exit 2.
    Usage(String),
    /// Something failed at run time: exit 1.
    Runtime(String),
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::Usage(message.into())
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Failure::Runtime(message.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Runtime(m) => m,
        }
    }
}
