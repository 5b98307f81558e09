//! CPU architecture codes of the SIF header and partitions, mapped to Go architecture names
//! (the names SIF tools and Apptainer use).

/// (SIF code, Go name). The code is stored as two ASCII digits plus a NUL.
const ARCHES: &[(&[u8; 2], &str)] = &[
    (b"01", "386"),
    (b"02", "amd64"),
    (b"03", "arm"),
    (b"04", "arm64"),
    (b"05", "ppc64"),
    (b"06", "ppc64le"),
    (b"07", "mips"),
    (b"08", "mipsle"),
    (b"09", "mips64"),
    (b"10", "mips64le"),
    (b"11", "s390x"),
    (b"12", "riscv64"),
];

/// On-disk code of an unknown architecture.
pub(crate) const ARCH_UNKNOWN: [u8; 3] = *b"00\0";

/// Go name for an on-disk arch code, or "unknown".
pub(crate) fn go_arch(code: &[u8; 3]) -> &'static str {
    if code[2] != 0 {
        return "unknown";
    }
    ARCHES
        .iter()
        .find(|(c, _)| c[..] == code[..2])
        .map_or("unknown", |(_, name)| name)
}

/// On-disk code for a Go arch name, if SIF knows it.
pub(crate) fn sif_arch(go_name: &str) -> Option<[u8; 3]> {
    ARCHES
        .iter()
        .find(|(_, name)| *name == go_name)
        .map(|(c, _)| [c[0], c[1], 0])
}

/// Go architecture name of the machine this runs on ("amd64" on x86_64, "arm64" on aarch64...).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86" => "386",
        "x86_64" => "amd64",
        "arm" => "arm",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "mips" => "mips",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips64" => "mips64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_codes_round_trip() {
        for (_, name) in ARCHES {
            let code = sif_arch(name).expect("known arch");
            assert_eq!(go_arch(&code), *name);
        }
        assert_eq!(go_arch(&ARCH_UNKNOWN), "unknown");
        assert_eq!(go_arch(b"02x"), "unknown");
        assert_eq!(sif_arch("sparc"), None);
        assert_eq!(sif_arch("amd64"), Some(*b"02\0"));
    }

    #[test]
    fn host_arch_is_known_to_sif() {
        assert!(sif_arch(host_arch()).is_some(), "host arch {}", host_arch());
    }
}
