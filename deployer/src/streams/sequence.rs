//! The order of DynamoDB stream sequence numbers.

/// Orders DynamoDB stream sequence numbers, which are decimal numbers of varying length.
pub fn compare_sequence_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
        assert_eq!(compare_sequence_numbers("000010", "10"), Ordering::Equal);
        assert_eq!(
            compare_sequence_numbers("800000000003126276362", "800000000003126276361"),
            Ordering::Greater
        );
        assert_eq!(compare_sequence_numbers("0", "000"), Ordering::Equal);
    }
}
