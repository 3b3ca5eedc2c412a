//! In-process round trips over a real vhost-user socket, with the `frontend` driver.

use blkrec::frontend::{BlkClient, BlkOp, ClientOptions};
use blkrec::{Config, Server};
use std::path::Path;
use testkit::pattern;
use writelog::{Kind, LogReader};

const OK: u8 = 0;

fn setup(dir: &Path, num_queues: u16) -> Config {
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let mut c = Config::new(img, dir.join("blk.sock"), dir.join("w.log"));
    c.log_data = true;
    c.num_queues = num_queues;
    c.durable = true;
    c.control = Some(dir.join("ctl.sock"));
    c.serial = Some("e4race-test".into());
    c
}

#[test]
fn write_read_flush_over_socket() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 1);
    let server = Server::bind(&cfg).unwrap();
    let log = server.log().clone();
    let t = std::thread::spawn(move || server.serve());

    let mut c = BlkClient::connect(&cfg.socket, &ClientOptions::default()).unwrap();
    assert_eq!(c.capacity(), 8192);
    assert_eq!(c.config().num_queues, 1);
    let data = pattern(1, 64 * 1024);
    assert_eq!(c.write(0, 128, &data).unwrap(), OK);
    let (st, back) = c.read(0, 128, data.len()).unwrap();
    assert_eq!(st, OK);
    assert!(back == data);
    assert_eq!(c.flush(0).unwrap(), OK);
    let (st, id) = c.get_id(0).unwrap();
    assert_eq!(st, OK);
    assert_eq!(&id[..11], b"e4race-test");
    // Library mark API, ordered with writes through the same seq counter.
    assert_eq!(log.mark("after-first-flush").unwrap(), 2);
    let c2 = c
        .execute(
            0,
            BlkOp::Discard {
                sector: 128,
                num_sectors: 8,
            },
        )
        .unwrap();
    assert_eq!(c2.status, OK);
    let c3 = c
        .execute(
            0,
            BlkOp::WriteZeroes {
                sector: 300,
                num_sectors: 8,
                unmap: true,
            },
        )
        .unwrap();
    assert_eq!(c3.status, OK);
    // Control socket mark.
    let mut ctl = std::os::unix::net::UnixStream::connect(cfg.control.as_ref().unwrap()).unwrap();
    assert_eq!(
        blkrec::control::send_mark(&mut ctl, "via-control").unwrap(),
        5
    );
    // Past the end: IOERR, not a crash.
    assert_eq!(c.write(0, 8192, &[1u8; 512]).unwrap(), 1);
    // Pipelined batch: several writes in flight, one kick.
    let mut tokens = Vec::new();
    let bufs: Vec<Vec<u8>> = (0..8).map(|i| pattern(100 + i, 4096)).collect();
    for (i, b) in bufs.iter().enumerate() {
        tokens.push(
            c.submit(
                0,
                BlkOp::Write {
                    sector: 1000 + 8 * i as u64,
                    data: b,
                },
            )
            .unwrap(),
        );
    }
    c.kick(0).unwrap();
    let mut done = Vec::new();
    while done.len() < tokens.len() {
        done.extend(c.wait(0).unwrap());
    }
    assert!(done.iter().all(|d| d.status == OK));
    c.shutdown().unwrap();

    let summary = t.join().unwrap().unwrap();
    assert!(!cfg.socket.exists(), "socket removed after disconnect");
    let recs = LogReader::open(&cfg.log).unwrap().read_all().unwrap();
    assert_eq!(summary.records, recs.len() as u64);
    let kinds: Vec<Kind> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(
        &kinds[..6],
        &[
            Kind::Write,
            Kind::Flush,
            Kind::Mark,
            Kind::Discard,
            Kind::WriteZeroes,
            Kind::Mark
        ]
    );
    assert_eq!(recs[0].data.as_deref(), Some(&data[..]));
    assert_eq!(recs[0].block_hashes.len(), 16);
    assert_eq!(recs.len(), 6 + 8);
    let img = std::fs::read(&cfg.image).unwrap();
    assert!(
        img[128 * 512..136 * 512].iter().all(|b| *b == 0),
        "discarded"
    );
    assert!(img[136 * 512..128 * 512 + data.len()] == data[8 * 512..]);
    for (i, b) in bufs.iter().enumerate() {
        let off = (1000 + 8 * i) * 512;
        assert!(img[off..off + 4096] == b[..]);
    }
}

#[test]
fn multiqueue_without_event_idx() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 4);
    let server = Server::bind(&cfg).unwrap();
    let t = std::thread::spawn(move || server.serve());
    let opts = ClientOptions {
        num_queues: 4,
        queue_size: 64,
        event_idx: false,
        ..ClientOptions::default()
    };
    let mut c = BlkClient::connect(&cfg.socket, &opts).unwrap();
    assert_eq!(c.config().num_queues, 4);
    for round in 0..10u64 {
        for q in 0..4usize {
            let d = pattern(round * 4 + q as u64, 4096);
            let sector = (round * 4 + q as u64) * 8;
            c.submit(q, BlkOp::Write { sector, data: &d }).unwrap();
            c.kick(q).unwrap();
        }
        for q in 0..4usize {
            let got = c.wait(q).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].status, OK);
        }
    }
    c.shutdown().unwrap();
    t.join().unwrap().unwrap();
    let recs = LogReader::open(&cfg.log).unwrap().read_all().unwrap();
    assert_eq!(recs.len(), 40);
    for q in 0..4u16 {
        assert_eq!(
            recs.iter().filter(|r| r.queue == q).count(),
            10,
            "queue {q}"
        );
    }
    let img = std::fs::read(&cfg.image).unwrap();
    for r in &recs {
        let off = r.sector as usize * 512;
        assert!(img[off..off + 4096] == *r.data.as_ref().unwrap());
    }
}

#[test]
fn busy_and_stale_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 1);
    let server = Server::bind(&cfg).unwrap();
    // A second server on the same live socket is refused and leaves the first log alone.
    let mut cfg2 = cfg.clone();
    cfg2.log = dir.path().join("other.log");
    cfg2.control = None;
    let err = Server::bind(&cfg2).err().unwrap().to_string();
    assert!(err.contains("in use"), "{err}");
    assert!(!cfg2.log.exists());
    drop(server);
    // A stale socket file (nobody listening) is replaced.
    let _ = std::fs::remove_file(&cfg.socket);
    drop(std::os::unix::net::UnixListener::bind(&cfg.socket).unwrap());
    assert!(cfg.socket.exists());
    let server = Server::bind(&cfg2).unwrap();
    drop(server);
    // Missing image: clear error naming the path.
    let mut cfg3 = cfg2.clone();
    cfg3.image = dir.path().join("nope.img");
    let err = Server::bind(&cfg3).err().unwrap().to_string();
    assert!(
        err.contains("nope.img") && err.contains("does not exist"),
        "{err}"
    );
}
