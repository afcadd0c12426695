//! Accounting of sparse files: a store charges what the copy allocates
//! (`st_blocks`), not its length, and the copy keeps the holes.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use fscache::{FsCache, MaxSize, Stored};

#[test]
fn a_sparse_file_is_charged_its_blocks_and_stays_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let img = src.join("disk.img");
    let mut f = std::fs::File::create(&img).unwrap();
    for at in [0u64, 100 << 20, (256 << 20) - 4096] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
    }
    f.set_len(256 << 20).unwrap();
    drop(f);
    let src_blocks = std::fs::metadata(&img).unwrap().blocks() * 512;
    if src_blocks >= 1 << 20 {
        eprintln!("skipped: this file system does not keep holes");
        return;
    }
    // A limit far below the file's length: only its blocks must fit.
    let c = FsCache::builder("sparse-test")
        .max_size_if_unset(MaxSize::Bytes(4 << 20))
        .open(tmp.path().join("c"))
        .unwrap();
    assert_eq!(c.store_tree("img", &src).unwrap(), Stored::Committed);
    let copy = c.path().join("objects/img/data/disk.img");
    let md = std::fs::metadata(&copy).unwrap();
    assert_eq!(md.len(), 256 << 20);
    assert_eq!(
        md.blocks() * 512,
        src_blocks,
        "the copy allocates what the source does"
    );
    let info = std::fs::read_to_string(c.path().join("objects/img/object.info")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let size = info["size"].as_u64().unwrap();
    assert!(
        size < 1 << 20,
        "charged {size} bytes for {src_blocks} allocated"
    );
    let mut block = [0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&copy).unwrap(),
        &mut block,
        100 << 20,
    )
    .unwrap();
    assert_eq!(block, [7u8; 4096]);
}
