//! Small manual tool: `sqfs_tool build SRC OUT [gzip|zstd]`, `sqfs_tool cat IMG OFFSET PATH`,
//! `sqfs_tool ls IMG OFFSET PATH`, `sqfs_tool extract IMG OFFSET DEST`.
use rctr_squashfs::*;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("build") => {
            let mut opts = BuildOptions::default();
            if args.get(4).map(String::as_str) == Some("zstd") {
                opts.compression = Compression::Zstd;
            }
            let t = std::time::Instant::now();
            let stats = build_from_dir(Path::new(&args[2]), Path::new(&args[3]), &opts)?;
            eprintln!("{stats:?} in {:?}", t.elapsed());
        }
        Some("cat") => {
            let r = SquashfsReader::open(Path::new(&args[2]), args[3].parse()?)?;
            match r.read_file(&args[4])? {
                Some(d) => std::io::Write::write_all(&mut std::io::stdout(), &d)?,
                None => eprintln!("not found"),
            }
        }
        Some("ls") => {
            let r = SquashfsReader::open(Path::new(&args[2]), args[3].parse()?)?;
            for e in r.list_dir(&args[4])? {
                println!("{:?} {:?}", e.name, e.metadata);
            }
        }
        Some("extract") => {
            let r = SquashfsReader::open(Path::new(&args[2]), args[3].parse()?)?;
            let rep = r.extract_to(Path::new(&args[4]))?;
            eprintln!("{rep:?}");
        }
        _ => anyhow::bail!("usage: sqfs_tool build|cat|ls|extract ..."),
    }
    Ok(())
}
