//! A real terminal for a child process: a pseudo-terminal from `openpty` (libc, already a
//! dependency; the pty crates would add nix and regex to every build), the child in its own
//! session with the pty as its controlling terminal, so Ctrl-C typed into it is a real SIGINT
//! from the line discipline.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Terminal {
    master: File,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: JoinHandle<()>,
}

impl Terminal {
    /// Starts `command` with stdin, stdout and stderr on a new 24x100 terminal.
    pub fn spawn(mut command: Command) -> Terminal {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two file descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
        command
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("the child starts");
        // The parent's copies of the slave end close here, so reading ends when the child's do.
        drop(command);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut source = master.try_clone().unwrap();
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every slave end is closed.
            while let Ok(n) = source.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            child,
            output,
            reader,
        }
    }

    /// Everything the terminal showed so far, as text.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal has shown `text`.
    pub fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.screen().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the terminal echoes what is typed (a hidden prompt turns that off while it reads).
    pub fn echoes(&self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: `termios` is plain data, filled by `tcgetattr` on our open master descriptor.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut termios) },
            0
        );
        termios.c_lflag & libc::ECHO != 0
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits for the child to end; returns its status and everything the terminal showed.
    pub fn finish(self) -> (ExitStatus, String) {
        self.finish_answering("", b"")
    }

    /// As [`Terminal::finish`], typing `keys` once if `prompt` appears meanwhile.
    pub fn finish_answering(mut self, prompt: &str, keys: &[u8]) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut answered = prompt.is_empty();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if !answered && self.screen().contains(prompt) {
                self.type_keys(keys);
                answered = true;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the child never ended:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(self.master);
        self.reader.join().unwrap();
        let output = String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned();
        (status, output)
    }
}
