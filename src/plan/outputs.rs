//! The output files a build produces: one per `-t` type, named `<-o>.<ext>`.

use std::path::PathBuf;

use super::OutputSpec;
use crate::cli::Cli;

/// The file extension of an output type. Types not listed here are qemu-img
/// formats, which use their own name.
pub fn extension(kind: &str) -> &str {
    match kind {
        "squashfs" => "squash",
        "docker" => "docker.tar",
        "oci" => "oci.tar",
        other => other,
    }
}

/// One output per distinct `-t` type, in the order given.
pub fn outputs(cli: &Cli) -> Vec<OutputSpec> {
    let mut out: Vec<OutputSpec> = Vec::new();
    for kind in cli.output_types() {
        if out.iter().any(|o| o.kind == kind) {
            continue;
        }
        let path = PathBuf::from(format!("{}.{}", cli.output, extension(&kind)));
        out.push(OutputSpec { kind, path });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn each_type_gets_its_extension() {
        let cli = Cli::try_parse_from([
            "dib-create",
            "-o",
            "out/img",
            "-t",
            "qcow2,raw,vhd,vmdk,tar,tgz,squashfs,docker,oci,aci,vdi,qcow2",
            "x",
        ])
        .unwrap();
        let got: Vec<(String, String)> = outputs(&cli)
            .into_iter()
            .map(|o| (o.kind, o.path.display().to_string()))
            .collect();
        let want = [
            ("qcow2", "out/img.qcow2"),
            ("raw", "out/img.raw"),
            ("vhd", "out/img.vhd"),
            ("vmdk", "out/img.vmdk"),
            ("tar", "out/img.tar"),
            ("tgz", "out/img.tgz"),
            ("squashfs", "out/img.squash"),
            ("docker", "out/img.docker.tar"),
            ("oci", "out/img.oci.tar"),
            ("aci", "out/img.aci"),
            ("vdi", "out/img.vdi"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
