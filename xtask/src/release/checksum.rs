//! `SHA256SUMS` in the format `sha256sum --check` reads. The digests are the snapshot archives'
//! (`sha256_hex` for krew's `sha256` field, `checksum` = `sha256:<hex>` for OCI digests).

pub use multicluster_core::snapshot::archive::{checksum, sha256_hex};

/// `SHA256SUMS`: one `<hex>  <file name>` line per file, sorted by name.
pub fn sha256sums<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut lines: Vec<(String, String)> = files
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), sha256_hex(bytes)))
        .collect();
    lines.sort();
    lines
        .iter()
        .map(|(name, hex)| format!("{hex}  {name}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_the_known_digests_sorted_by_name_in_sha256sum_format() {
        let sums = sha256sums([("b.txt", b"".as_slice()), ("a.txt", b"abc".as_slice())]);
        assert_eq!(
            sums,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a.txt\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  b.txt\n"
        );
    }
}
