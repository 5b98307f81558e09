//! Numeric codes stored in SIF descriptors, and the names `siftool` prints for them.

use std::fmt;

/// Declares an enum over an `i32` on-disk code, with an `Unknown(code)` catch-all so that
/// reading never fails on values written by a newer SIF library.
macro_rules! coded_enum {
    (
        $(#[$meta:meta])*
        $name:ident, unknown = $unknown:literal { $($(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A code this library does not know.
            Unknown(i32),
        }

        impl $name {
            /// Decodes the on-disk value.
            pub fn from_code(code: i32) -> Self {
                match code {
                    $($code => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }

            /// The on-disk value.
            pub fn code(self) -> i32 {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Unknown(code) => code,
                }
            }
        }

        /// The name `siftool` prints.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $text,)*
                    Self::Unknown(_) => $unknown,
                })
            }
        }
    };
}

coded_enum! {
    /// Type of a data object (descriptor `DataType` field).
    DataType, unknown = "Unknown" {
        /// Definition file the image was built from.
        Deffile = 0x4001 => "Def.FILE",
        EnvVar = 0x4002 => "Env.Vars",
        Labels = 0x4003 => "JSON.Labels",
        /// File system image (squashfs, ext3, ...).
        Partition = 0x4004 => "FS",
        Signature = 0x4005 => "Signature",
        GenericJson = 0x4006 => "JSON.Generic",
        Generic = 0x4007 => "Generic/Raw",
        CryptoMessage = 0x4008 => "Cryptographic Message",
        Sbom = 0x4009 => "SBOM",
        OciRootIndex = 0x400a => "OCI.RootIndex",
        OciBlob = 0x400b => "OCI.Blob",
    }
}

coded_enum! {
    /// File system type of a partition object.
    FsType, unknown = "Unknown" {
        Squash = 1 => "Squashfs",
        Ext3 = 2 => "Ext3",
        ImmuObj = 3 => "Archive",
        Raw = 4 => "Raw",
        EncryptedSquashfs = 5 => "Encrypted squashfs",
    }
}

coded_enum! {
    /// Role of a partition object.
    PartType, unknown = "Unknown" {
        System = 1 => "System",
        /// The primary system partition: the container's root file system.
        PrimSys = 2 => "*System",
        Data = 3 => "Data",
        Overlay = 4 => "Overlay",
    }
}

coded_enum! {
    /// Hash function of a signature object (names as Go's `crypto.Hash` prints them).
    HashType, unknown = "Unknown" {
        Sha256 = 1 => "SHA-256",
        Sha384 = 2 => "SHA-384",
        Sha512 = 3 => "SHA-512",
        Blake2s = 4 => "BLAKE2s-256",
        Blake2b = 5 => "BLAKE2b-256",
    }
}

coded_enum! {
    /// Encoding of a cryptographic message object.
    FormatType, unknown = "Unknown" {
        OpenPgp = 1 => "OpenPGP",
        Pem = 2 => "PEM",
    }
}

coded_enum! {
    /// Kind of a cryptographic message object.
    MessageType, unknown = "Unknown" {
        ClearSignature = 0x100 => "Clear Signature",
        RsaOaep = 0x200 => "RSA-OAEP",
    }
}

coded_enum! {
    /// Format of an SBOM object.
    SbomFormat, unknown = "unknown" {
        CycloneDxJson = 1 => "cyclonedx-json",
        CycloneDxXml = 2 => "cyclonedx-xml",
        GitHubJson = 3 => "github-json",
        SpdxJson = 4 => "spdx-json",
        SpdxRdf = 5 => "spdx-rdf",
        SpdxTagValue = 6 => "spdx-tag-value",
        SpdxYaml = 7 => "spdx-yaml",
        SyftJson = 8 => "syft-json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for code in 0x4000..0x4010 {
            assert_eq!(DataType::from_code(code).code(), code);
        }
        assert_eq!(DataType::from_code(0x4004), DataType::Partition);
        assert_eq!(DataType::from_code(7), DataType::Unknown(7));
        assert_eq!(DataType::Unknown(7).to_string(), "Unknown");
        assert_eq!(SbomFormat::from_code(99).to_string(), "unknown");
        assert_eq!(PartType::PrimSys.to_string(), "*System");
        assert_eq!(HashType::from_code(2).to_string(), "SHA-384");
    }
}
