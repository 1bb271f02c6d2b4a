//! The builder's half of `attach --via` over `ssh -T`: `nix-attach attach
//! --framed` speaks frames on its stdin and stdout, greets first, takes the
//! window's size first, relays the build's terminal, follows resizes and
//! ends with the shell's status. Driven here through pipes, as ssh would.

use crate::support::{nix_attach, release, Drv};
use nix_attach::protocol::{read_frame, write_frame, AgentFrame, ClientFrame};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// A framed relay to build `id`: what to send it, and its frames.
fn framed(id: &str) -> (std::process::Child, ChildStdin, Receiver<AgentFrame>) {
    let mut child = Command::new(nix_attach())
        .args(["attach", "--framed", "--term", "xterm-256color", id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let (frames, received) = channel();
    std::thread::spawn(move || {
        while let Ok(Some(frame)) = read_frame::<AgentFrame>(&mut stdout) {
            if frames.send(frame).is_err() {
                break;
            }
        }
    });
    (child, stdin, received)
}

/// Reads frames until the terminal output holds `needle` (or the relay
/// stops); returns the output.
fn output_until(frames: &Receiver<AgentFrame>, needle: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(needle) {
        match frames.recv_timeout(Duration::from_secs(30)) {
            Ok(AgentFrame::Output(data)) => seen.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("waiting for {needle:?}, got {other:?} after {seen:?}"),
        }
    }
    seen
}

fn send(to: &mut ChildStdin, frame: ClientFrame) {
    write_frame(to, &frame).unwrap();
    std::io::Write::flush(to).unwrap();
}

#[test]
fn the_relay_greets_follows_the_window_and_ends_with_the_shells_status() {
    let (build, paused) = Drv::new("framed").phase("buildPhase", "false").pause();
    let (mut child, mut stdin, frames) = framed(&paused.id);
    assert_eq!(frames.recv_timeout(Duration::from_secs(30)).unwrap(), AgentFrame::Relaying(1), "its first frame says what it speaks");
    send(&mut stdin, ClientFrame::Resize { rows: 30, cols: 100 });
    output_until(&frames, " $ ");
    send(&mut stdin, ClientFrame::Input("stty size\r".into()));
    output_until(&frames, "30 100");
    send(&mut stdin, ClientFrame::Resize { rows: 40, cols: 120 });
    send(&mut stdin, ClientFrame::Input("stty size; echo TERM=$TERM\r".into()));
    let seen = output_until(&frames, "TERM=xterm-256color");
    assert!(seen.contains("40 120"), "the new size reached the build: {seen:?}");
    send(&mut stdin, ClientFrame::Input("exit 3\r".into()));
    let status = loop {
        match frames.recv_timeout(Duration::from_secs(30)).unwrap() {
            AgentFrame::Output(_) => continue,
            other => break other,
        }
    };
    assert_eq!(status, AgentFrame::Exit(3));
    assert_eq!(child.wait().unwrap().code(), Some(3));
    release(build, &paused);
}

#[test]
fn a_first_frame_that_is_not_the_window_size_is_refused_in_frames() {
    let (build, paused) = Drv::new("framed-bad").phase("buildPhase", "false").pause();
    let (mut child, mut stdin, frames) = framed(&paused.id);
    assert_eq!(frames.recv_timeout(Duration::from_secs(30)).unwrap(), AgentFrame::Relaying(1));
    send(&mut stdin, ClientFrame::Input("ls\r".into()));
    match frames.recv_timeout(Duration::from_secs(30)).unwrap() {
        AgentFrame::Error(message) => assert!(message.contains("first frame must be the window's size"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(frames.recv_timeout(Duration::from_secs(30)).unwrap(), AgentFrame::Exit(125));
    assert_eq!(child.wait().unwrap().code(), Some(125));
    release(build, &paused);
}
