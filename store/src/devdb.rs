//! The zero-setup database: a private PostgreSQL cluster made from the machine's own PostgreSQL
//! binaries (`initdb` + `pg_ctl`), kept in a directory (default `./.groundwork/pg`) and reused on the next
//! start. When the process runs as root the cluster is owned by and run as the `postgres` user, since
//! `initdb` refuses to run as root.

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
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
    started_here: bool,
}

impl LocalDb {
    /// Starts the cluster in `dir` (creating it on first use), or finds it running.
    pub fn start(dir: &Path) -> Result<Self> {
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
        let mut db = Self {
            dir,
            bin,
            port,
            run_as_postgres,
            started_here: false,
        };
        if !db.is_running() {
            let mut cmd = command(&db.bin.join("pg_ctl"), run_as_postgres);
            cmd.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(db.dir.join("log"))
                .args(["-w", "-t", "60", "start", "-o"])
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                    db.port,
                    db.dir.display()
                ));
            run(cmd, "pg_ctl start")?;
            db.started_here = true;
        }
        Ok(db)
    }

    fn is_running(&self) -> bool {
        let mut cmd = command(&self.bin.join("pg_ctl"), self.run_as_postgres);
        cmd.arg("-D").arg(self.dir.join("data")).arg("status");
        cmd.output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// `postgres://postgres@127.0.0.1:{port}/{database}`.
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
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
