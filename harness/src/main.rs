//! `attn-kernels`: run case files, time them, print RoPE frequencies, describe the build, and
//! check every op against its reference (spec section 5).

use attn_kernels::rope::RopeConfig;
use attn_kernels::runtime::{self, Gpu};
use attn_kernels::{Error, Result, TensorInfo};
use attn_kernels_harness::case::{self, Device};
use attn_kernels_harness::check;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "attn-kernels", version, about = "Attention kernels: run cases, check, inspect the build")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    /// GPU if one is usable, else CPU (never the emulated device).
    Auto,
    Cpu,
    Cuda,
    /// The emulated device: the CUDA kernels run on the CPU with GPU semantics and checkers.
    Emu,
}

#[derive(Subcommand)]
enum Command {
    /// Run one case file and write its outputs.
    Run {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
    },
    /// Time one case file (CUDA events on a GPU, wall clock on the CPU); prints one JSON line.
    Bench {
        #[arg(long)]
        input: PathBuf,
        #[arg(long, value_enum, default_value = "cuda")]
        device: DeviceArg,
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        #[arg(long, default_value_t = 50)]
        iters: usize,
    },
    /// Print the frequency vector and attention factor of a RoPE configuration.
    RopeFreqs {
        /// RoPE configuration JSON (spec section 2).
        #[arg(long)]
        config: String,
        /// Sequence length n (for dynamic and longrope).
        #[arg(long)]
        seq_len: Option<usize>,
    },
    /// Describe the build (kernels, architectures, nvcc) and the GPU found.
    Info {
        /// Also print ptxas's register / shared-memory / spill report per kernel.
        #[arg(long)]
        ptxas: bool,
    },
    /// Run every op at a realistic shape against its reference and print a table.
    Check {
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Only ops whose name contains this.
        #[arg(long)]
        op: Option<String>,
    },
}

fn open_device(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => Ok(Device::Cuda(Gpu::new(0)?)),
        DeviceArg::Emu => Ok(Device::Cuda(Gpu::emulated()?)),
        DeviceArg::Auto => Ok(match (runtime::kernels_compiled(), Gpu::new(0)) {
            (true, Ok(g)) => Device::Cuda(g),
            _ => Device::Cpu,
        }),
    }
}

fn run(input: PathBuf, output: PathBuf, device: DeviceArg) -> Result<()> {
    let c = case::read_case(&input)?;
    let dev = open_device(device)?;
    let out = case::run(&c, &dev)?;
    case::write_outputs(&output, &c.config, &dev.name(), &out)
}

fn bench(input: PathBuf, device: DeviceArg, warmup: usize, iters: usize) -> Result<()> {
    if iters == 0 {
        return Err(Error::invalid("iters", "must be at least 1"));
    }
    if device == DeviceArg::Emu {
        return Err(Error::unsupported(
            "device",
            "the emulated device runs kernels on the CPU; its times are not GPU timings, so `bench` refuses it",
        ));
    }
    let c = case::read_case(&input)?;
    let dev = open_device(device)?;
    // Ops without a resident path are timed through `case::run` (uploads and downloads
    // included), and the JSON line says so with "resident": false.
    let resident = match &dev {
        Device::Cuda(gpu) => case::upload_inputs(gpu, &c.inputs).and_then(|r| case::run_resident(&c, gpu, &r)).is_ok(),
        Device::Cpu => false,
    };
    let times: Vec<f64> = match &dev {
        Device::Cuda(gpu) if !resident => {
            gpu.time_ms(warmup, iters, || case::run(&c, &dev).map(|_| ()))?.into_iter().map(f64::from).collect()
        }
        Device::Cuda(gpu) => {
            // Inputs uploaded once; each timed run is the op on resident inputs (output
            // allocation is stream-ordered and included, as an engine calling the op pays it).
            // Successive runs rotate over enough input copies to exceed the L2 cache.
            let bytes: usize = c.inputs.values().map(|t| t.numel() * t.dtype().size()).sum();
            let copies = (2 * gpu.info().l2_bytes.max(0) as usize / bytes.max(1) + 1).min(8);
            let sets = (0..copies).map(|_| case::upload_inputs(gpu, &c.inputs)).collect::<Result<Vec<_>>>()?;
            let mut i = 0;
            gpu.time_ms(warmup, iters, || {
                i += 1;
                case::run_resident(&c, gpu, &sets[i % sets.len()]).map(|_| ())
            })?
            .into_iter()
            .map(f64::from)
            .collect()
        }
        Device::Cpu => {
            for _ in 0..warmup {
                case::run(&c, &dev)?;
            }
            (0..iters)
                .map(|_| {
                    let t0 = std::time::Instant::now();
                    case::run(&c, &dev).map(|_| t0.elapsed().as_secs_f64() * 1e3)
                })
                .collect::<Result<_>>()?
        }
    };
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let line = serde_json::json!({
        "op": c.op()?,
        "device": dev.name(),
        "median_ms": check::median(times.clone()),
        "min_ms": min,
        "times_ms": times,
        "resident": resident,
    });
    println!("{line}");
    Ok(())
}

fn rope_freqs(config: &str, seq_len: Option<usize>) -> Result<()> {
    let cfg: RopeConfig = serde_json::from_str(config).map_err(|e| Error::config("rope", e.to_string()))?;
    cfg.validate(cfg.rotary_dim)?;
    let n = seq_len.or(cfg.seq_len).unwrap_or(1);
    let r = cfg.resolve(n)?;
    println!("{}", serde_json::json!({"inv_freq": r.inv_freq, "attention_factor": r.attention_factor}));
    Ok(())
}

fn info(ptxas: bool) -> Result<()> {
    println!("attn-kernels {}", env!("CARGO_PKG_VERSION"));
    match runtime::NOT_COMPILED_REASON {
        Some(why) => println!("kernels: NOT compiled ({why})"),
        None => {
            println!("kernels: compiled by nvcc {}", runtime::NVCC_VERSION.unwrap_or("?"));
            println!("architectures: {}", runtime::CUDA_ARCHS.join(", "));
        }
    }
    for m in runtime::MODULES {
        println!("module {} ({}, {} bytes): {}", m.name, m.source, m.fatbin.len(), m.kernels.join(", "));
        if ptxas {
            for line in m.ptxas_report.lines().filter(|l| l.contains("Compiling entry") || l.contains("Used") || l.contains("spill")) {
                println!("    {}", line.trim_start_matches("ptxas info    : "));
            }
        }
    }
    println!("bindings: {}", runtime::BINDINGS_STATUS);
    match runtime::emu::EMU_LIBRARY {
        Some(path) => println!("emulated device: built ({path}); emulated (CPU), not a GPU; select it with --device emu or ATTN_KERNELS_DEVICE=emu"),
        None => println!("emulated device: not built ({})", runtime::emu::EMU_NOT_BUILT_REASON.unwrap_or("?")),
    }
    match Gpu::first() {
        Ok(g) if g.info().emulated => {
            println!("gpu: none selected; ATTN_KERNELS_DEVICE=emu gives the emulated device (CPU), not a GPU");
            if let Some(d) = runtime::emu::describe() {
                println!("emulated device settings: {d}");
            }
        }
        Ok(g) => {
            let i = g.info();
            println!(
                "gpu: {} (sm_{}{}), {} SMs, {:.1} GiB, L2 {} MiB, driver API {}.{}",
                i.name,
                i.compute_capability.0,
                i.compute_capability.1,
                i.multiprocessors,
                i.total_memory as f64 / (1u64 << 30) as f64,
                i.l2_bytes >> 20,
                i.driver_version / 1000,
                (i.driver_version % 1000) / 10
            );
        }
        Err(e) => println!("gpu: none ({e})"),
    }
    Ok(())
}

fn check_all(device: DeviceArg, filter: Option<String>) -> Result<bool> {
    let dev = open_device(device)?;
    if let Device::Cpu = dev {
        let why = match Gpu::new(0) {
            Err(e) => e.to_string(),
            Ok(_) if !runtime::kernels_compiled() => "kernels not compiled".into(),
            Ok(_) => "CPU requested".into(),
        };
        println!("device: cpu (reference vs float64 oracle; GPU: {why})");
    } else if dev.gpu().is_some_and(|g| g.info().emulated) {
        println!(
            "device: {} (CUDA kernels on the emulated device vs CPU reference; emulated (CPU), not a GPU: times are not GPU timings)",
            dev.name()
        );
    } else {
        println!("device: {} (CUDA vs CPU reference)", dev.name());
    }
    let cases: Vec<_> =
        check::all_cases().into_iter().filter(|c| filter.as_deref().is_none_or(|f| c.op.contains(f))).collect();
    let mut rows = Vec::new();
    for c in &cases {
        let row = check::run_one(c, &dev);
        eprintln!("{} {} {}", row.op, row.shape, if row.passed { "PASS" } else { "FAIL" });
        rows.push(row);
    }
    print!("{}", check::format_table(&rows));
    let failed = rows.iter().filter(|r| !r.passed).count();
    println!("{} passed, {} failed", rows.len() - failed, failed);
    Ok(failed == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { input, output, device } => run(input, output, device).map(|_| true),
        Command::Bench { input, device, warmup, iters } => bench(input, device, warmup, iters).map(|_| true),
        Command::RopeFreqs { config, seq_len } => rope_freqs(&config, seq_len).map(|_| true),
        Command::Info { ptxas } => info(ptxas).map(|_| true),
        Command::Check { device, op } => check_all(device, op),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
