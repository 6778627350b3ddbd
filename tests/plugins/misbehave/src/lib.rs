//! A framework plugin that misbehaves on request, to prove the sandbox
//! holds: `GET /loop` never returns, `/alloc` allocates without bound,
//! `/recurse` recurses without bound, `/trap` panics, `/huge` answers a
//! 20 MiB body, `/ok` answers 200. With the config `mode=<one of those>`,
//! every call (offers, ticks, requests) misbehaves that way.

use std::hint::black_box;

use wasmos_sdk::framework::{Framework, Request, Response};

/// With `mode` configured, every call misbehaves that way (a plugin that
/// is broken, not one with a broken endpoint).
struct Misbehave {
    mode: Option<String>,
}

/// Recursion that lives on the wasm stack (no frame in linear memory), so
/// that it runs into the host's wasm stack limit.
fn recurse(n: u64) -> u64 {
    if black_box(n) == u64::MAX {
        return 0;
    }
    recurse(n + 1).wrapping_add(black_box(n))
}

fn misbehave(how: &str) -> Response {
    match how {
        "ok" => Response::text(200, "fine"),
        "loop" => {
            let mut i = 0u64;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "recurse" => Response::text(200, &recurse(0).to_string()),
        "trap" => panic!("this plugin traps on purpose"),
        "huge" => Response {
            status: 200,
            headers: vec![],
            body: vec![b'x'; 20 << 20],
        },
        _ => Response::error(404, "try /ok, /loop, /alloc, /recurse, /trap or /huge"),
    }
}

impl Framework for Misbehave {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(Misbehave {
            mode: config.get("mode").filter(|m| !m.is_empty()).cloned(),
        })
    }

    fn offers(&mut self, offers: Vec<wasmos_sdk::framework::Offer>) {
        if let Some(m) = &self.mode {
            misbehave(m);
        }
        let ids: Vec<String> = offers.into_iter().map(|o| o.id).collect();
        wasmos_sdk::framework::driver::decline(&ids, Some(60.0));
    }

    fn tick(&mut self, _now_ms: u64) {
        if let Some(m) = &self.mode {
            misbehave(m);
        }
    }

    fn http(&mut self, req: Request) -> Response {
        match &self.mode {
            Some(m) => misbehave(m),
            None => misbehave(req.path.trim_start_matches('/')),
        }
    }
}

wasmos_sdk::export_framework!(Misbehave);
