//! Which TCP ports a process group listens on, read from `/proc`: for the hint a deploy gets when
//! its app serves on another port than the `$PORT` it was given (the most common first-deploy
//! mistake on Cloud Run too).

use std::collections::BTreeSet;
use std::collections::HashSet;

/// The listening sockets in the text of `/proc/PID/net/tcp` or `tcp6`: `(inode, port)` of each
/// line in state `0A` (LISTEN). Lines that do not parse are skipped.
pub fn parse_listening(text: &str) -> Vec<(u64, u16)> {
    text.lines()
        .skip(1) // the header
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") {
                return None;
            }
            let (_, port) = fields.get(1)?.rsplit_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            Some((inode, port))
        })
        .collect()
}

/// The inode of a `/proc/PID/fd/N` link target `socket:[INODE]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The child pids in the text of `/proc/PID/task/TID/children`.
pub fn parse_children(text: &str) -> impl Iterator<Item = i32> + '_ {
    text.split_whitespace().filter_map(|pid| pid.parse().ok())
}

/// `leader` and its descendants, found through `/proc/PID/task/*/children` (a walk down from one
/// process, not a scan of every process on the machine: this runs every couple of seconds for
/// each instance still starting, and a thousand may start at once). At most `MAX_PROCESSES`.
fn family(leader: i32) -> Vec<i32> {
    const MAX_PROCESSES: usize = 256;
    let mut found = vec![leader];
    let mut next = 0;
    while next < found.len() && found.len() < MAX_PROCESSES {
        let pid = found[next];
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            found.extend(parse_children(&text));
        }
    }
    found.truncate(MAX_PROCESSES);
    found
}

/// The TCP ports an instance's processes listen on (its group leader `pgid` and every process
/// under it), ascending. Empty when nothing is listening yet or `/proc` cannot be read.
pub fn group_listening_ports(pgid: i32) -> Vec<u16> {
    if pgid <= 1 {
        return Vec::new();
    }
    let members = family(pgid);
    let mut inodes = HashSet::new();
    for pid in &members {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|target| socket_inode(&target.to_string_lossy()))
            {
                inodes.insert(inode);
            }
        }
    }
    let Some(leader) = members.first() else {
        return Vec::new();
    };
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{leader}/net/{table}")) else {
            continue;
        };
        for (inode, port) in parse_listening(&text) {
            if inodes.contains(&inode) {
                ports.insert(port);
            }
        }
    }
    ports.into_iter().collect()
}

/// What to tell a user whose instance, given `port`, listens on `listening` instead; `None` while
/// it listens on `port` or on nothing yet.
pub fn wrong_port_hint(port: u16, listening: &[u16]) -> Option<String> {
    if listening.is_empty() || listening.contains(&port) {
        return None;
    }
    let list: Vec<String> = listening.iter().map(u16::to_string).collect();
    let (noun, first) = match listening {
        [only] => ("port", *only),
        [first, ..] => ("ports", *first),
        [] => return None,
    };
    Some(format!(
        "it listens on {noun} {} but not on $PORT ({port}): have the app read the PORT \
         environment variable, or deploy with --port {first}",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 100 0 0 10 0
   garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listening_sockets_are_read_from_proc_net_tables() {
        assert_eq!(parse_listening(TCP), [(1111, 8080), (3333, 22)]);
        assert_eq!(parse_listening(TCP6), [(4444, 8081)]);
        assert!(parse_listening("").is_empty());
        let links = [
            ("socket:[1111]", Some(1111)),
            ("pipe:[5]", None),
            ("/dev/null", None),
            ("socket:[x]", None),
        ];
        for (link, inode) in links {
            assert_eq!(socket_inode(link), inode, "{link}");
        }
    }

    #[test]
    fn the_hint_names_the_ports_the_app_chose() {
        let cases: &[(u16, &[u16], Option<&str>)] = &[
            (40000, &[], None),
            (40000, &[40000], None),
            (40000, &[40000, 9229], None), // an extra (debug) port is fine
            (
                40000,
                &[8080],
                Some("listens on port 8080 but not on $PORT (40000)"),
            ),
            (40000, &[3000, 9229], Some("listens on ports 3000, 9229")),
        ];
        for (port, listening, hint) in cases {
            let got = wrong_port_hint(*port, listening);
            match hint {
                None => assert_eq!(got, None, "{listening:?}"),
                Some(part) => {
                    let got = got.unwrap_or_default();
                    assert!(got.contains(part), "{got}");
                }
            }
        }
    }

    #[test]
    fn children_lists_are_read() {
        assert_eq!(parse_children("12 345 ").collect::<Vec<_>>(), [12, 345]);
        assert_eq!(parse_children("").count(), 0);
    }

    #[tokio::test]
    async fn a_real_listener_of_a_child_process_is_found() {
        // A shell that stays the leader, and under it a python that listens: like
        // `sh -c 'python3 app.py'` without exec.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let script = format!(
            "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(30)"
        );
        let mut shell = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("python3 -c \"{script}\"; true"))
            .spawn()
            .unwrap();
        let leader = i32::try_from(shell.id()).unwrap();
        let mut found = Vec::new();
        for _ in 0..200 {
            found = group_listening_ports(leader);
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let _ = std::process::Command::new("pkill")
            .args(["-P", &leader.to_string()])
            .status();
        let _ = shell.kill();
        let _ = shell.wait();
        assert_eq!(found, [port]);
        assert!(group_listening_ports(0).is_empty());
    }
}
