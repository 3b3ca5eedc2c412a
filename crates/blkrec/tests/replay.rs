//! A recorded log, exported to dm-log-writes and replayed by our own code, rebuilds the
//! final image byte for byte (and so does replaying our own log directly).

use blkrec::frontend::{BlkClient, BlkOp, ClientOptions};
use blkrec::{Config, Server};
use writelog::{export_dm_log_writes, replay, replay_dm_log_writes, LogPosition};

#[test]
fn export_and_replay_rebuild_the_final_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let size = 8usize << 20;
    let initial: Vec<u8> = (0..size)
        .map(|i| (i / 4096) as u8 ^ (i % 251) as u8)
        .collect();
    std::fs::write(&img, &initial).unwrap();
    let mut cfg = Config::new(&img, dir.path().join("blk.sock"), dir.path().join("w.log"));
    cfg.log_data = true;
    cfg.num_queues = 2;
    let server = Server::bind(&cfg).unwrap();
    let log = server.log().clone();
    let t = std::thread::spawn(move || server.serve());

    let opts = ClientOptions {
        num_queues: 2,
        ..ClientOptions::default()
    };
    let mut c = BlkClient::connect(&cfg.socket, &opts).unwrap();
    let sectors = (size / 512) as u64;
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut marks = Vec::new();
    for i in 0..300u64 {
        let q = (i % 2) as usize;
        let len_sectors = 1 + rnd() % 64;
        let sector = rnd() % (sectors - len_sectors);
        let op = rnd() % 20;
        let st = match op {
            0 => {
                c.execute(
                    q,
                    BlkOp::Discard {
                        sector,
                        num_sectors: len_sectors as u32,
                    },
                )
                .unwrap()
                .status
            }
            1 => {
                c.execute(
                    q,
                    BlkOp::WriteZeroes {
                        sector,
                        num_sectors: len_sectors as u32,
                        unmap: i % 2 == 0,
                    },
                )
                .unwrap()
                .status
            }
            2 => c.flush(q).unwrap(),
            3 => {
                marks.push(format!("mark {i}"));
                log.mark(&format!("mark {i}")).unwrap();
                0
            }
            _ => {
                let data: Vec<u8> = (0..len_sectors * 512).map(|_| rnd() as u8).collect();
                c.write(q, sector, &data).unwrap()
            }
        };
        assert_eq!(st, 0, "op {op} at {sector}");
    }
    c.shutdown().unwrap();
    t.join().unwrap().unwrap();
    let final_img = std::fs::read(&img).unwrap();

    let a = dir.path().join("a.img");
    std::fs::write(&a, &initial).unwrap();
    replay(&cfg.log, &a, &LogPosition::End).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == final_img,
        "own-log replay differs"
    );

    let dm = dir.path().join("w.dmlog");
    let ex = export_dm_log_writes(&cfg.log, &dm).unwrap();
    assert!(ex.entries >= 300);
    let b = dir.path().join("b.img");
    std::fs::write(&b, &initial).unwrap();
    replay_dm_log_writes(&dm, &b, &LogPosition::End).unwrap();
    assert!(
        std::fs::read(&b).unwrap() == final_img,
        "dm-log-writes replay differs"
    );
}
