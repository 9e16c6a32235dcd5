//! Sizes as operators write them: `500M`, `2GiB`, `1048576` (binary units: `K` is 1024 bytes).

/// What `parse` says of digits it cannot read.
pub const NOT_A_NUMBER: &str = "the size must be a whole number";

/// The bytes `text` says: digits, then an optional unit (`K`, `M`, `G` or `T`, alone or with
/// `B` or `iB`, in any case). `Err` says what is wrong with it.
pub fn parse(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err("unknown unit (K, M, G or T)"),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|d| d.checked_mul(factor))
        .ok_or(NOT_A_NUMBER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_operators_write_them() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("512"), Ok(512));
        assert_eq!(parse(" 500M "), Ok(500 << 20));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
        assert_eq!(parse("3kb"), Ok(3 << 10));
        assert_eq!(parse("1T"), Ok(1 << 40));
        assert_eq!(parse("5X"), Err("unknown unit (K, M, G or T)"));
        assert_eq!(parse("M"), Err(NOT_A_NUMBER));
        assert_eq!(parse("1.5G"), Err("unknown unit (K, M, G or T)"));
        assert_eq!(parse("99999999999T"), Err(NOT_A_NUMBER));
    }
}
