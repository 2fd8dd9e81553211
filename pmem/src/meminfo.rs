//! Fields of /proc/meminfo (the memory log checks its size against the host's memory; `decree
//! doctor` reports huge pages).

/// The number of field `name` (with its colon, e.g. `"MemTotal:"`), if /proc/meminfo can be read
/// and has it. Sizes there are in KiB; counts are plain numbers.
pub fn field(name: &str) -> Option<u64> {
    parse_field(&std::fs::read_to_string("/proc/meminfo").ok()?, name)
}

fn parse_field(meminfo: &str, name: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_the_number_on_its_line() {
        let meminfo = "MemTotal:       24600000 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";
        assert_eq!(parse_field(meminfo, "MemTotal:"), Some(24_600_000));
        assert_eq!(parse_field(meminfo, "HugePages_Total:"), Some(0));
        assert_eq!(parse_field(meminfo, "Hugepagesize:"), Some(2048));
        assert_eq!(parse_field(meminfo, "MemFree:"), None);
    }
}
