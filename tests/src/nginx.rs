//! nginx on loopback, for the benchmarks that compare Ferry with real peers
//! (aria2, curl) fetching the same files from the same server.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// nginx serving `root` on a free loopback port, in a prefix of its own.
pub struct Nginx {
    child: Child,
    pub port: u16,
}

impl Nginx {
    pub fn start(binary: &Path, root: &Path, prefix: &Path) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes 1;\nerror_log {prefix}/logs/error.log;\npid {prefix}/nginx.pid;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{ access_log off; sendfile on; keepalive_requests 100000;\n\
                 client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fcgi;\n\
                 uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
                prefix = prefix.display(),
                root = root.display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx { child, port };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nginx did not listen on {port}");
    }
}

impl Drop for Nginx {
    /// SIGTERM, so that the master stops its workers too (a SIGKILL left
    /// them serving, one set more for every run).
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
