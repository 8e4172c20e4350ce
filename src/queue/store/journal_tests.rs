//! The journal's frames read back: as written, torn, damaged.

use super::*;

/// Reads `len` bytes at `at` (a value a scan pointed to).
fn read_value(path: &Path, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

fn write(path: &Path, entries: Vec<Entry>) {
    let mut f = File::create(path).unwrap();
    for (i, mut e) in entries.into_iter().enumerate() {
        f.write_all(e.seal(i as u64 + 1)).unwrap();
    }
}

fn three() -> Vec<Entry> {
    let mut a = Entry::downloads();
    a.put(b"dl_a", b"{\"v\":1}");
    a.put(b"dl_b", b"{\"v\":2}");
    let mut b = Entry::downloads();
    b.remove(b"dl_a");
    vec![a, b, Entry::settings(b"{}")]
}

#[test]
fn frames_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    write(&p, three());
    let mut seen = Vec::new();
    let scan = scan(&p, |f| {
        seen.push((f.seq, f.kind, f.ops().map(|o| o.len())));
        if let Some(ops) = f.ops() {
            for op in ops {
                if let Op::Put { value, at, .. } = op {
                    assert_eq!(read_value(&p, at, value.len()).unwrap(), value);
                }
            }
        }
    })
    .unwrap();
    assert_eq!(scan.damage, None);
    assert_eq!(scan.seq, 3);
    assert_eq!(scan.end, std::fs::metadata(&p).unwrap().len());
    assert_eq!(
        seen,
        vec![
            (1, Kind::Downloads, Some(2)),
            (2, Kind::Downloads, Some(1)),
            (3, Kind::Settings, None)
        ]
    );
}

#[test]
fn a_torn_last_entry_is_not_damage_but_a_flip_before_the_end_is() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    write(&p, three());
    let whole = std::fs::read(&p).unwrap();
    // Cut in the middle of the last entry: a torn tail.
    std::fs::write(&p, &whole[..whole.len() - 3]).unwrap();
    let s = scan(&p, |_| {}).unwrap();
    assert_eq!((s.frames, s.damage), (2, None));
    // One flipped bit in the first entry: damage, at byte 0.
    let mut flipped = whole.clone();
    flipped[20] ^= 0x10;
    std::fs::write(&p, &flipped).unwrap();
    let s = scan(&p, |_| {}).unwrap();
    assert_eq!((s.frames, s.damage), (0, Some(0)));
    // A flipped length that points past the end is damage too, not a torn tail.
    let mut long = whole;
    long[6] ^= 0x01;
    std::fs::write(&p, &long).unwrap();
    let s = scan(&p, |_| {}).unwrap();
    assert_eq!((s.frames, s.damage), (0, Some(0)));
}
