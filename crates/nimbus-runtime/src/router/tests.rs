use std::collections::BTreeMap;

use super::*;
use crate::ContainerSpec;

/// Records calls; `adopt` returns `survivors`; `fail_adopt` makes it fail.
struct Fake {
    name: &'static str,
    survivors: Vec<&'static str>,
    fail_adopt: bool,
    calls: Mutex<Vec<String>>,
}

fn fake(name: &'static str, survivors: &[&'static str]) -> Arc<Fake> {
    Arc::new(Fake {
        name,
        survivors: survivors.to_vec(),
        fail_adopt: false,
        calls: Mutex::new(Vec::new()),
    })
}

fn info(id: &str) -> InstanceInfo {
    InstanceInfo {
        id: id.to_owned(),
        namespace: "default".into(),
        service: "hello".into(),
        version: "v1".into(),
        port: 1,
        pid: None,
        started_at: 0,
    }
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait::async_trait]
impl Driver for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceInfo, DriverError> {
        self.record(format!("start {}", spec.id));
        Ok(info(&spec.id))
    }
    async fn wait(&self, id: &str) -> Result<ExitStatus, DriverError> {
        self.record(format!("wait {id}"));
        Ok(ExitStatus::Code(0))
    }
    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), DriverError> {
        self.record(format!("stop {id}"));
        Ok(())
    }
    async fn adopt(&self) -> Result<Vec<InstanceInfo>, DriverError> {
        self.record("adopt".into());
        if self.fail_adopt {
            return Err(DriverError::UnknownInstance("engine gone".into()));
        }
        Ok(self.survivors.iter().map(|id| info(id)).collect())
    }
    fn log_path(&self, id: &str) -> Option<PathBuf> {
        Some(PathBuf::from(format!("{}/{id}.log", self.name)))
    }
}

fn spec(id: &str, image: Option<&str>) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        namespace: "default".into(),
        service: "hello".into(),
        version: "v1".into(),
        command: String::new(),
        env: BTreeMap::new(),
        port: 1,
        container: image.map(|image| ContainerSpec {
            image: image.into(),
            ..ContainerSpec::default()
        }),
    }
}

#[test]
fn runtime_choice() {
    let cases = [
        (spec("a", None), Owner::Process),              // a command
        (spec("b", Some("busybox")), Owner::Container), // an image
    ];
    for (spec, owner) in cases {
        assert_eq!(owner_of(&spec), owner, "{}", spec.id);
    }
}

#[tokio::test]
async fn dispatches_by_owner() {
    let (process, docker) = (fake("process", &[]), fake("docker", &[]));
    let router = DriverRouter::new(process.clone(), docker.clone());
    router.start(&spec("p1", None)).await.unwrap();
    router.start(&spec("c1", Some("img"))).await.unwrap();
    assert_eq!(router.owner("p1"), Some(Owner::Process));
    assert_eq!(router.owner("c1"), Some(Owner::Container));

    router.wait("c1").await.unwrap();
    assert_eq!(router.log_path("p1"), Some(PathBuf::from("process/p1.log")));
    assert_eq!(router.log_path("c1"), Some(PathBuf::from("docker/c1.log")));
    router.stop("c1", Duration::ZERO).await.unwrap();
    router.stop("p1", Duration::ZERO).await.unwrap();
    assert_eq!(process.calls(), ["start p1", "stop p1"]);
    assert_eq!(docker.calls(), ["start c1", "wait c1", "stop c1"]);

    // Stopped instances are forgotten; stopping an unknown id is fine and calls nobody.
    assert_eq!(router.owner("c1"), None);
    router.stop("c1", Duration::ZERO).await.unwrap();
    assert!(matches!(
        router.wait("c1").await,
        Err(DriverError::UnknownInstance(_))
    ));
    assert_eq!(router.log_path("nope"), None);
    assert_eq!(docker.calls().len(), 3);
}

#[tokio::test]
async fn adopts_from_both_and_remembers_owners() {
    let process = fake("process", &["p-old"]);
    let docker = fake("docker", &["c-old1", "c-old2"]);
    let router = DriverRouter::new(process.clone(), docker.clone());
    let mut ids: Vec<String> = router
        .adopt()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["c-old1", "c-old2", "p-old"]);
    router.stop("c-old2", Duration::ZERO).await.unwrap();
    assert_eq!(docker.calls(), ["adopt", "stop c-old2"]);

    // A failing container engine does not hide the process survivors.
    let broken = Arc::new(Fake {
        name: "docker",
        survivors: vec![],
        fail_adopt: true,
        calls: Mutex::new(Vec::new()),
    });
    let router = DriverRouter::new(fake("process", &["p-old"]), broken);
    assert_eq!(router.adopt().await.unwrap().len(), 1);
}
