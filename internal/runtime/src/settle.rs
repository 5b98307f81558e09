//! Whether a freshly started application has settled: every thread of every process under
//! the container's init asleep, waiting for something (a connection, a timer, a child), as a
//! server is once it listens. What `instance start` watches for instead of a fixed wait.

use std::collections::VecDeque;

/// One look at the processes under `init_pid` (host pid). True only if there is at least one,
/// every thread of each could be read, and every one is in an interruptible sleep or stopped.
/// Running, disk wait (a page fault on the image) and zombie (about to be reaped, perhaps
/// with a failure status) all count as not settled, and so does a process vanishing mid-look.
pub fn is_settled(init_pid: i32) -> bool {
    let Some(pids) = descendants(init_pid) else {
        return false;
    };
    !pids.is_empty() && pids.iter().all(|&pid| threads_asleep(pid))
}

/// Host pids of every process below `root`, or None if the tree changed while walked.
fn descendants(root: i32) -> Option<Vec<i32>> {
    let mut found = vec![];
    let mut queue = VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks.flatten() {
            let path = task.path().join("children");
            let Ok(children) = std::fs::read_to_string(path) else {
                return None;
            };
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push_back(child);
            }
        }
    }
    Some(found)
}

fn threads_asleep(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| state_of(&stat))
            .is_some_and(is_asleep)
    })
}

/// The state letter of a /proc stat line (after the parenthesised command, which may itself
/// contain spaces and parentheses).
fn state_of(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

fn is_asleep(state: char) -> bool {
    // S: interruptible sleep; T/t: stopped (by a signal, by a tracer): it waits for someone.
    matches!(state, 'S' | 'T' | 't')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_last_parenthesis() {
        assert_eq!(state_of("42 (a) b) c) S 1 42"), Some('S'));
        assert_eq!(state_of("7 (python3) R 1 7 7 0"), Some('R'));
        assert_eq!(state_of("7 (x"), None);
    }

    #[test]
    fn only_sleeping_and_stopped_count_as_settled() {
        for s in ['S', 'T', 't'] {
            assert!(is_asleep(s), "{s}");
        }
        for s in ['R', 'D', 'Z', 'X', 'I'] {
            assert!(!is_asleep(s), "{s}");
        }
    }

    #[test]
    fn a_sleeping_child_is_settled_and_a_busy_one_is_not() {
        let me = std::process::id() as i32;
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // Wait (bounded) until the sleeper has exec'd and gone to sleep.
        let settled = (0..2000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            descendants(me).is_some_and(|d| d.contains(&(sleeper.id() as i32)))
                && threads_asleep(sleeper.id() as i32)
        });
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(settled, "a sleeping child was never seen asleep");
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let seen_busy = (0..50).any(|_| !threads_asleep(busy.id() as i32));
        busy.kill().unwrap();
        busy.wait().unwrap();
        assert!(seen_busy, "a busy loop was never seen running");
        // A process that does not exist is not settled.
        assert!(!is_settled(i32::MAX));
    }
}
