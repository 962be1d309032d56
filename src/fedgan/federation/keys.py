"""Record and config keys exchanged between the ServerApp and the ClientApps, in one place."""

ARRAYS = "arrays"  # ArrayRecord: generator.* and discriminator.* tensors
CONFIG = "config"  # ConfigRecord sent with each training round
METRICS = "metrics"  # MetricRecord in each reply

# ConfigRecord entries (server -> client)
SERVER_ROUND = "server-round"  # injected by Flower's FedAvg
GLOBAL_ROUND = "global-round"  # the run's round number, counting rounds before a resume
STORE = "store"
PARTITION = "partition"
NUM_CLIENTS = "num-clients"
ALPHA = "alpha"
MODEL_CONFIG = "model-config"  # JSON of GANConfig
TRAIN_CONFIG = "train-config"  # JSON of TrainConfig; `epochs` is the local epochs per round
WEIGHTING = "weighting"  # examples | unweighted (SecAgg+: the client applies the weight itself)
SECAGG_CLIP = "secagg-clip"  # SecAgg+: updates are clipped to +-this before quantisation
SECAGG_MAX_WEIGHT = "secagg-max-weight"  # SecAgg+: the largest weight a hospital may send
ROUNDS = "rounds"  # total rounds of the run: a DP target epsilon is spread over all of them
PROXIMAL_MU = "proximal-mu"  # fedprox: weight of the proximal term (the key Flower's FedProx sends)
WIRE = "wire"  # fp32 | fp16: how the hospital's model travels back (fedgan.federation.wire)
DISCLOSE = "disclose"  # comma-separated DISCLOSURES the hospitals may put in their metrics
THREADS = "threads"  # simulation only: CPU threads each ClientApp may use (its share of the machine)

# mdgan (fedgan.federation.split_server): the server's images out, the hospitals' gradients back
JUDGE = "judge"  # train action: judge the fakes of one exchange with this hospital's discriminator
GRADES = "grades"  # query action: this hospital's partition id and images per grade
HOSPITAL_STATE = "hospital-state"  # simulation: folder under which each hospital keeps its discriminator
EXCHANGE = "exchange"  # index of this exchange within the round
LAST_EXCHANGE = "last-exchange"  # the round's last exchange: the hospital also keeps a round snapshot
IN_MEMORY = "in-memory"  # simulation, one worker process for every hospital: mid-round state stays in memory
FAKES = "fakes"  # ArrayRecord entries: images to judge, their grades, the step each belongs to
FAKE_GRADES = "fake-grades"
STEP_INDEX = "step-index"
GRADIENTS = "gradients"  # reply: d(G loss)/d(image), one per image received
DISCRIMINATOR_PREFIX = "discriminator."  # first exchange of a run: the starting discriminator
NODE_STATE_DIR = "state-dir"  # deployment node config: where an mdgan hospital keeps its discriminator

# MetricRecord entries (client -> server)
NUM_EXAMPLES = "num-examples"  # FedAvg's example weighting
UNIT_WEIGHT = "unit-weight"  # 1 for every client: the paper's unweighted mean
PARTITION_ID = "partition-id"  # the hospital's id: in its metrics, and in its node config
D_LOSS = "d-loss"
G_LOSS = "g-loss"
SECONDS = "seconds"
STEPS = "steps"
GRADE_COUNT = (
    "grade-{}"  # images of grade 0-4 this hospital trained on (unlabelled: all zero); scalars, as SecAgg+ needs
)
DP_NOISE = "dp-noise"  # DP-SGD: this hospital's noise multiplier, sampling rate and private steps this round
DP_RATE = "dp-rate"
DP_STEPS = "dp-steps"
CLIPPED = "clipped"  # SecAgg+: share of update values clipped to the range
LARGEST_UPDATE = "largest-update"  # SecAgg+: largest absolute update value before clipping
BYTES_RECEIVED = "bytes-received"  # mdgan: what this hospital received and sent this round (they differ by hospital)
BYTES_SENT = "bytes-sent"
GRADIENT_CLIPS = "gradient-clips"  # mdgan: exchanges in which the server scaled this hospital's gradients to its bound

#: aggregation weighting -> the metric that holds each hospital's weight
WEIGHTINGS = {"examples": NUM_EXAMPLES, "unweighted": UNIT_WEIGHT}

# node_config entries (set by the simulation engine, or per SuperNode in deployment), besides PARTITION_ID
NODE_NUM_PARTITIONS = "num-partitions"
