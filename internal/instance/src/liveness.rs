//! Telling a live process from a dead one whose pid was reused.

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field 22 is index 19; a zombie is dead to us.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn is_alive(pid: i32, start_ticks: u64) -> bool {
    process_start_ticks(pid).is_some_and(|t| t == start_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_other_ticks_are_not() {
        let me = std::process::id() as i32;
        let ticks = process_start_ticks(me).expect("own stat");
        assert!(is_alive(me, ticks));
        assert!(!is_alive(me, ticks + 1));
        assert!(!is_alive(i32::MAX - 1, ticks));
    }
}
