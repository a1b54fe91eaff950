//! Errors of the block-device layer. Each names the node, the problem, where
//! in the config it is (when known), and how to fix it.

use std::fmt;

/// Where in a config a problem is: the config's origin and the 1-based line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct At {
    /// A file path, `DIB_BLOCK_DEVICE_CONFIG`, or `built-in default`.
    pub source: String,
    /// 1-based line; 0 when unknown.
    pub line: u32,
}

impl At {
    pub fn new(source: &str, line: u32) -> Self {
        At {
            source: source.to_string(),
            line,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.source),
            l => write!(f, "{} line {}", self.source, l),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockDevError {
    #[error("{at}: invalid YAML: {message}")]
    Yaml { at: At, message: String },

    #[error("reading block-device config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },

    #[error("{at}: {message}; {hint}")]
    Structure {
        at: At,
        message: String,
        hint: String,
    },

    #[error(
        "{at}: unknown block-device module `{module}`; use one of local_loop, partitioning, lvm, mkfs, mount, fstab"
    )]
    UnknownModule { at: At, module: String },

    #[error("{at}: {module} node `{node}` needs `{field}`; {hint}")]
    MissingField {
        at: At,
        node: String,
        module: &'static str,
        field: &'static str,
        hint: String,
    },

    #[error("{at}: node `{node}`: invalid {field} `{value}`: {reason}")]
    InvalidValue {
        at: At,
        node: String,
        field: &'static str,
        value: String,
        reason: String,
    },

    #[error("{at}: node `{node}` has unknown key `{key}`; known keys are {known}")]
    UnknownKey {
        at: At,
        node: String,
        key: String,
        known: String,
    },

    #[error(
        "{at}: duplicate node name `{name}` (first defined at line {first_line}); give one of them another `name:`"
    )]
    DuplicateName {
        at: At,
        name: String,
        first_line: u32,
    },

    #[error(
        "{at}: node `{node}` refers to `{base}`, which no node defines; add a node named `{base}` or fix the `base:`"
    )]
    MissingBase { at: At, node: String, base: String },

    #[error(
        "{at}: the nodes {nodes} depend on each other in a cycle; break the cycle in their `base:`"
    )]
    Cycle { at: At, nodes: String },

    #[error(
        "{at}: filesystem label `{label}` of node `{node}` is already used by node `{other}`; labels must be unique, set a different `label:`"
    )]
    DuplicateLabel {
        at: At,
        label: String,
        node: String,
        other: String,
    },

    #[error(
        "{at}: label `{label}` of node `{node}` is {len} characters, but {fstype} allows at most {max}; set a shorter `label:`"
    )]
    LabelTooLong {
        at: At,
        node: String,
        label: String,
        fstype: String,
        len: usize,
        max: usize,
    },

    #[error(
        "{at}: mount point `{mount_point}` of node `{node}` is already used by node `{other}`; each mount point may appear once"
    )]
    DuplicateMountPoint {
        at: At,
        mount_point: String,
        node: String,
        other: String,
    },

    #[error(
        "{at}: partitioning on `{node}` needs {count} primary MBR slots, but MBR has 4; drop the `primary` flag from some partitions so they become logical, or use `label: gpt`"
    )]
    TooManyPrimary { at: At, node: String, count: usize },

    #[error(
        "{at}: partition `{node}` does not fit: it needs {need} bytes but only {available} are left on the disk; make it smaller or the image bigger (--image-size)"
    )]
    DoesNotFit {
        at: At,
        node: String,
        need: u64,
        available: u64,
    },

    #[error("{at}: partition table on `{node}`: {message}")]
    Table {
        at: At,
        node: String,
        message: String,
    },

    #[error("writing partition table of `{node}`: {source}")]
    Io {
        node: String,
        source: std::io::Error,
    },
}

/// The result type of this layer.
pub type Result<T> = std::result::Result<T, BlockDevError>;
