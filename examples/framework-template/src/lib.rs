//! A template framework plugin. Copy this directory to start your own.
//!
//! `POST /frameworks/hello/run` queues one task that echoes the configured
//! greeting; the next offer that fits runs it. `GET /frameworks/hello/`
//! shows how many ran. The count lives in the framework's replicated
//! key-value store, so it survives master restarts and failovers.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p wasmos-example-framework`.

use wasmos_sdk::framework::{
    Command, Framework, Offer, Request, Resources, Response, TaskSpec, TaskStatus, driver,
};
use wasmos_sdk::{kv, log};

struct Hello {
    greeting: String,
    /// Runs asked for but not launched yet.
    waiting: u64,
}

impl Framework for Hello {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        let waiting = kv::get_json("waiting").unwrap_or(0);
        if waiting == 0 {
            driver::suppress();
        }
        Ok(Hello {
            greeting: config
                .get("greeting")
                .cloned()
                .unwrap_or_else(|| "hello".into()),
            waiting,
        })
    }

    fn offers(&mut self, offers: Vec<Offer>) {
        for offer in offers {
            let fits = offer.resources.cpus >= 0.1 && offer.resources.mem >= 32.0;
            if self.waiting == 0 || !fits {
                driver::decline(&[offer.id], Some(30.0));
                continue;
            }
            let n: u64 = kv::get_json("launched").unwrap_or(0) + 1;
            let task = TaskSpec {
                task_id: format!("hello-{n}"),
                name: "hello".into(),
                resources: Resources {
                    cpus: 0.1,
                    mem: 32.0,
                    disk: 0.0,
                    gpus: 0,
                    ports: vec![],
                },
                command: Command {
                    shell: false,
                    value: "echo".into(),
                    arguments: vec!["echo".into(), self.greeting.clone()],
                    environment: vec![],
                    user: None,
                },
                labels: vec![],
                kill_grace_period_ms: None,
                health_check: None,
                container: None,
                fetch: Vec::new(),
                readiness_check: None,
                accepted_roles: Vec::new(),
                volumes: Vec::new(),
                discovery: Vec::new(),
            };
            match driver::launch(&[offer.id], &[task], None) {
                Ok(()) => {
                    self.waiting -= 1;
                    let _ = kv::set_json("launched", &n);
                    let _ = kv::set_json("waiting", &self.waiting);
                }
                Err(e) => log::error(&format!("launch refused: {e}")),
            }
        }
        if self.waiting == 0 {
            driver::suppress();
        }
    }

    fn status(&mut self, update: TaskStatus) {
        log::info(&format!("{} is {:?}", update.task_id, update.state));
    }

    fn http(&mut self, req: Request) -> Response {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("GET", []) => Response::json(
                200,
                &serde_json::json!({
                    "launched": kv::get_json::<u64>("launched").unwrap_or(0),
                    "waiting": self.waiting,
                }),
            ),
            ("POST", ["run"]) => {
                self.waiting += 1;
                if let Err(e) = kv::set_json("waiting", &self.waiting) {
                    return Response::error(500, &e);
                }
                driver::revive();
                Response::json(202, &serde_json::json!({ "waiting": self.waiting }))
            }
            _ => Response::error(404, "try GET / or POST /run"),
        }
    }
}

wasmos_sdk::export_framework!(Hello);
