//! The zero-setup cluster `serve` starts without `DATABASE_URL`: a Unix socket in a private folder, no
//! TCP port, `fsync` on.

use groundwork_store::devdb::LocalDb;

#[tokio::test]
async fn the_local_cluster_listens_on_a_private_unix_socket_only_and_keeps_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    // A path too long for a socket: the socket goes to a short private folder instead.
    let dir = tmp
        .path()
        .join("a-folder-name-long-enough-that-the-socket-path-would-not-fit")
        .join("pg");
    let db = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || LocalDb::start(&dir)
    })
    .await
    .unwrap()
    .unwrap();
    let url = db.url("postgres");
    assert!(
        !url.contains("127.0.0.1") && url.contains("host=/"),
        "{url}"
    );
    let pool = groundwork_store::connect(&url, 1).await.unwrap();
    let listen: String = sqlx::query_scalar("show listen_addresses")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(listen, "", "the cluster listens on TCP");
    let fsync: String = sqlx::query_scalar("show fsync")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(fsync, "on");
    pool.close().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let socket_dir = url
            .split("host=")
            .nth(1)
            .and_then(|r| r.split('&').next())
            .unwrap();
        assert!(socket_dir.len() < 90, "{socket_dir}");
        let mode = std::fs::metadata(socket_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{socket_dir} is open to others: {mode:o}");
    }
    if db.started_here() {
        tokio::task::spawn_blocking(move || db.stop())
            .await
            .unwrap()
            .unwrap();
    }
}
