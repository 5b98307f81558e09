//! The Examples section of each command's help (`after_help`), kept together so they read as
//! one consistent set. The unit test in cli/mod.rs checks every command has one.

pub const EX_RCTR: &str = "\
Examples:
  rctr build server.sif server.def
  rctr exec image.sif cat /etc/os-release
  rctr -d run image.sif                  # show every step rctr takes
  rctr instance start image.sif web 8080
  rctr checkpoint instance web
  rctr help exec                         # help of one command";

pub const EX_BUILD: &str = "\
Examples:
  rctr build app.sif app.def             # From: and %files paths are relative to the current directory
  rctr build rootfs.sif ./rootfs/        # from a root filesystem directory
  rctr build copy.sif other.sif          # repack an image (its definition file is kept)
  rctr build -F --notest app.sif app.def # overwrite app.sif, skip %test
  rctr build debian.sif docker://debian:bookworm-slim
  rctr build --sandbox root/ oci-archive:image.tar";

pub const EX_PULL: &str = "\
Examples:
  rctr pull docker://debian:bookworm      # writes debian_bookworm.sif
  rctr pull py.sif docker://python:3.12-slim
  rctr pull --no-https docker://127.0.0.1:5000/test/busybox:v1   # a registry without TLS
  rctr pull -F docker://ubuntu:24.04    # again: only changed blobs are downloaded";

pub const EX_INSPECT: &str = "\
Examples:
  rctr inspect image.sif                 # labels
  rctr inspect --runscript image.sif
  rctr inspect --deffile --json image.sif";

pub const EX_EXEC: &str = "\
Examples:
  rctr exec image.sif cat /etc/os-release
  rctr exec --bind /data:/data:ro --contain image.sif ls /data
  rctr exec --env OMP_NUM_THREADS=4 --cleanenv image.sif ./solver
  rctr exec instance://web ps
  rctr exec --ckpt sim --ckpt-interval 30m sim.sif ./simulate input.dat
  rctr exec --ckpt sim --ckpt-engine app sim.sif ./simulate   # the application saves itself";

pub const EX_RUN: &str = "\
Examples:
  rctr run image.sif
  rctr run image.sif --input data.csv    # arguments go to the runscript
  rctr run --ckpt sim --ckpt-interval 30m sim.sif input.dat
  rctr run --ckpt sim --ckpt-signal USR1 --ckpt-then requeue sim.sif input.dat   # Slurm batch job
  rctr run --ckpt-restart sim --generation 3 sim.sif input.dat";

pub const EX_SHELL: &str = "\
Examples:
  rctr shell image.sif
  rctr shell --contain --bind /scratch image.sif";

pub const EX_TEST: &str = "\
Examples:
  rctr test image.sif";

pub const EX_INSTANCE: &str = "\
Examples:
  rctr instance start image.sif web 8080
  rctr instance list
  rctr instance stop web
  rctr instance stop 'web*'              # every instance whose name matches";

pub const EX_INSTANCE_START: &str = "\
Examples:
  rctr instance start image.sif web 8080
  rctr instance start --ckpt-launch ex server.sif server 8888
  rctr instance start --ckpt-restart ex server.sif restarted 8888";

pub const EX_INSTANCE_RUN: &str = "\
Examples:
  rctr instance run image.sif job1 --input data.csv";

pub const EX_INSTANCE_LIST: &str = "\
Examples:
  rctr instance list
  rctr instance list 'web*'
  rctr instance list --json";

pub const EX_INSTANCE_STOP: &str = "\
Examples:
  rctr instance stop web
  rctr instance stop 'web*'              # quote the pattern so the shell leaves it alone
  rctr instance stop --all
  rctr instance stop --signal INT --timeout 30 web";

pub const EX_CHECKPOINT: &str = "\
Examples:
  rctr checkpoint create ex
  rctr instance start --ckpt-launch ex server.sif server 8888
  rctr checkpoint instance server
  rctr checkpoint list
  rctr checkpoint delete ex";

pub const EX_CHECKPOINT_CREATE: &str = "\
Examples:
  rctr checkpoint create ex              # engine from ckpt-conf.yaml (criu by default)
  rctr checkpoint create ex --engine app # the application saves and loads its own state";

pub const EX_CHECKPOINT_LIST: &str = "\
Examples:
  rctr checkpoint list
  rctr checkpoint list ex                # the generations of checkpoint ex
  rctr checkpoint list --json";

pub const EX_CHECKPOINT_VERIFY: &str = "\
Examples:
  rctr checkpoint verify ex
  rctr checkpoint verify --generation 2 ex";

pub const EX_CHECKPOINT_DELETE: &str = "\
Examples:
  rctr checkpoint delete ex
  rctr checkpoint delete --force ex      # even while an instance uses it";

pub const EX_CHECKPOINT_INSTANCE: &str = "\
Examples:
  rctr checkpoint instance server
  rctr checkpoint instance --stop server # checkpoint, then stop it
  rctr checkpoint instance --keep 3 --json server";

pub const EX_CHECKPOINT_EXPORT: &str = "\
Examples:
  rctr checkpoint export ex -o ex.tar.zst
  rctr checkpoint export ex --generation 2 -o ex-2.tar.zst
  rctr checkpoint export ex -o - | ssh node2 rctr checkpoint import -";

pub const EX_CHECKPOINT_IMPORT: &str = "\
Examples:
  rctr checkpoint import ex.tar.zst
  rctr checkpoint import ex.tar.zst --name ex2  # beside an existing ex
  rctr checkpoint import - < ex.tar.zst         # from standard input";

pub const EX_CHECKPOINT_CHECK: &str = "\
Examples:
  rctr checkpoint check
  rctr checkpoint check --ckpt-conf ./ckpt-conf.yaml";

pub const EX_SIF: &str = "\
Examples:
  rctr sif list image.sif
  rctr sif info 4 image.sif
  rctr sif header image.sif
  rctr sif dump 1 image.sif > image.def";

pub const EX_SIF_LIST: &str = "\
Examples:
  rctr sif list image.sif";

pub const EX_SIF_INFO: &str = "\
Examples:
  rctr sif info 4 image.sif";

pub const EX_SIF_HEADER: &str = "\
Examples:
  rctr sif header image.sif";

pub const EX_SIF_DUMP: &str = "\
Examples:
  rctr sif dump 1 image.sif > image.def";

pub const EX_VERSION: &str = "\
Examples:
  rctr version
  rctr --version                         # rctr's version only";

pub const EX_GENERATE: &str = "\
Examples:
  rctr generate-docs target/gen          # target/gen/man/*.1, target/gen/completions/*";
