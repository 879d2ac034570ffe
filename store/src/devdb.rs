//! The zero-setup database: a private PostgreSQL cluster made from the machine's own PostgreSQL
//! binaries (`initdb` + `pg_ctl`), kept in a directory (default `./.groundwork/pg`) and reused on the next
//! start. When the process runs as root the cluster is owned by and run as the `postgres` user, since
//! `initdb` refuses to run as root.
//!
//! The cluster listens on a Unix socket only (no TCP port), in a folder only its owner can enter: the
//! cluster's directory, or a short folder under the system temp folder when that path would be too
//! long for a socket. Other users of the machine, and the network, cannot reach it. `fsync` stays on
//! except for the test suite's cluster ([`LocalDb::start_for_tests`]).

use crate::{Error, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package that provides the binaries, named in the error when none are found.
pub const PACKAGE_HINT: &str = "install PostgreSQL's server binaries (Debian/Ubuntu: `apt-get install postgresql`), or set DATABASE_URL";

/// A local cluster that is running (started by us, or found already running).
#[derive(Debug)]
pub struct LocalDb {
    dir: PathBuf,
    socket_dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
    started_here: bool,
    durable: bool,
}

/// The longest socket folder path used as is (a socket path, `{dir}/.s.PGSQL.{port}`, must fit in
/// 107 bytes).
const MAX_SOCKET_DIR: usize = 80;

impl LocalDb {
    /// Starts the cluster in `dir` (creating it on first use), or finds it running.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, true)
    }

    /// [`LocalDb::start`] for throwaway test databases: `fsync` off.
    pub fn start_for_tests(dir: &Path) -> Result<Self> {
        Self::start_with(dir, false)
    }

    fn start_with(dir: &Path, durable: bool) -> Result<Self> {
        let bin = find_binaries()?;
        let run_as_postgres = is_root();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::LocalDatabase(format!("cannot create {}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::LocalDatabase(format!("cannot resolve {}: {e}", dir.display())))?;
        if run_as_postgres {
            chown_postgres(&dir)?;
        }
        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            let mut cmd = command(&bin.join("initdb"), run_as_postgres);
            cmd.arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]);
            run(cmd, "initdb")?;
        }
        let port_file = dir.join("port");
        let port = match std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            Some(p) => p,
            None => {
                let p = free_port()?;
                std::fs::write(&port_file, p.to_string()).map_err(|e| {
                    Error::LocalDatabase(format!("cannot write {}: {e}", port_file.display()))
                })?;
                p
            }
        };
        let socket_dir = socket_dir(&dir, run_as_postgres)?;
        let mut db = Self {
            dir,
            socket_dir,
            bin,
            port,
            run_as_postgres,
            started_here: false,
            durable,
        };
        if !db.is_running() {
            db.start_server()?;
            db.started_here = true;
        }
        Ok(db)
    }

    fn start_server(&self) -> Result<()> {
        let mut cmd = command(&self.bin.join("pg_ctl"), self.run_as_postgres);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "start", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses='' -c unix_socket_permissions=0700 -c fsync={} \
                 -c max_connections=200",
                self.port,
                self.socket_dir.display(),
                if self.durable { "on" } else { "off" }
            ));
        run(cmd, "pg_ctl start")
    }

    /// Starts the cluster again if it is no longer running (its server was killed or crashed);
    /// returns whether it had to. `serve` calls this every few seconds for a cluster it started, so
    /// the installation comes back by itself (connections reconnect on their own).
    pub fn ensure_running(&self) -> Result<bool> {
        if self.is_running() {
            return Ok(false);
        }
        self.start_server()?;
        Ok(true)
    }

    /// The server's process id, from `postmaster.pid`, while it runs.
    #[must_use]
    pub fn server_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    fn is_running(&self) -> bool {
        let mut cmd = command(&self.bin.join("pg_ctl"), self.run_as_postgres);
        cmd.arg("-D").arg(self.dir.join("data")).arg("status");
        cmd.output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// `postgres:///{database}?host={socket folder}&port={port}&user=postgres`: the Unix socket.
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres:///{database}?host={}&port={}&user=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// Whether this process started the cluster (and so should stop it).
    #[must_use]
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stops the cluster (fast shutdown).
    pub fn stop(&self) -> Result<()> {
        let mut cmd = command(&self.bin.join("pg_ctl"), self.run_as_postgres);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(cmd, "pg_ctl stop")
    }
}

/// Finds `initdb` and `pg_ctl`: on `PATH`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_binaries() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error::LocalDatabase(format!("no PostgreSQL binaries (initdb, pg_ctl) found on PATH or under /usr/lib/postgresql: {PACKAGE_HINT}")))
}

/// The folder the cluster's socket goes in: `dir` when its path is short enough, else
/// `{temp}/groundwork-pg-{hash of dir}`. Either is made private to the cluster's owner (mode 0700).
fn socket_dir(dir: &Path, run_as_postgres: bool) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let chosen = if dir.as_os_str().len() <= MAX_SOCKET_DIR {
        dir.to_path_buf()
    } else {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut h);
        let short = std::env::temp_dir().join(format!("groundwork-pg-{:016x}", h.finish()));
        std::fs::create_dir_all(&short)
            .map_err(|e| Error::LocalDatabase(format!("cannot create {}: {e}", short.display())))?;
        if run_as_postgres {
            chown_postgres(&short)?;
        }
        short
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&chosen, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            Error::LocalDatabase(format!("cannot restrict {}: {e}", chosen.display()))
        })?;
    }
    Ok(chosen)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_postgres(dir: &Path) -> Result<()> {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .map_err(|e| Error::LocalDatabase(format!("cannot run chown: {e}")))?;
    if !status.success() {
        return Err(Error::LocalDatabase(format!(
            "cannot hand {} to the postgres user (is there a `postgres` user? {PACKAGE_HINT})",
            dir.display()
        )));
    }
    Ok(())
}

fn command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::LocalDatabase(format!("cannot run {what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::LocalDatabase(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::LocalDatabase(format!("cannot find a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::LocalDatabase(format!("cannot find a free port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_cluster_is_started_again() {
        let root = tempfile::tempdir().expect("a temporary folder");
        #[cfg(unix)]
        {
            // As root, the cluster runs as `postgres`, which must reach the folder.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755));
        }
        let db = LocalDb::start_for_tests(&root.path().join("pg")).expect("the cluster starts");
        assert!(!db.ensure_running().expect("a status"), "it runs");
        let pid = db.server_pid().expect("the server's pid");
        let killed = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        // The status reports the dead server once its process is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while db.is_running() {
            assert!(
                std::time::Instant::now() < deadline,
                "the killed server still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(
            db.ensure_running().expect("a restart"),
            "it was started again"
        );
        assert!(db.is_running());
        assert_ne!(db.server_pid(), Some(pid));
        db.stop().expect("it stops");
    }
}
