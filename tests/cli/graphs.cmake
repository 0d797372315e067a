# See CMakeLists.txt: quadra_cli_test(<name> <exit status> <regex> <args>...)

# Residual networks on the command line: model describe shows the graph; curvature, spectrum,
# train and laplace run on them; a bad block is refused with its token and both shapes.
set(cli_fixtures ${PROJECT_SOURCE_DIR}/tests/fixtures/cli)
set(resnet_spec "conv(4,3,pad=1,bias=false) relu residual(conv(4,3,pad=1,bias=false) relu conv(4,3,pad=1,bias=false)) relu residual(conv(8,3,stride=2,pad=1,bias=false) relu conv(8,3,pad=1,bias=false), shortcut=conv(8,1,stride=2,bias=false)) relu globalavgpool flatten dropout linear(2)")
quadra_cli_test(graph-model-describe 0
                "^# model 'conv\\(4,3,stride=1,pad=1,bias=false\\) relu residual\\(conv\\(4,3,stride=1,pad=1,bias=false\\) relu conv\\(4,3,stride=1,pad=1,bias=false\\)\\) relu residual\\(.*,shortcut=conv\\(8,1,stride=2,pad=0,bias=false\\)\\) relu globalavgpool flatten dropout\\(0\\.5\\) linear\\(2\\)' on input 1x28x28: 1,238 parameters &&& ^layer +module +op +inputs +output +parameters +FLOPs/sample$ &&& ^5 +2 +add +4,1 +4x28x28 +3,136$ &&& ^10 +4\\.shortcut\\.0 +conv\\(8,1,stride=2,pad=0,bias=false\\) +6 +8x14x14 +32 +12,544$ &&& ^11 +4 +add +9,10 +8x14x14 +1,568$ &&& ^13 +6 +globalavgpool +12 +8x1x1 +1,568$ &&& ^4\\.shortcut\\.0\\.weight +\\(8, 4, 1, 1\\) +"
                model describe --model "${resnet_spec}" --input-shape 1x28x28)
set(resmlp_spec "linear(16) tanh residual(linear(16) tanh linear(16)) residual(linear(8) tanh, shortcut=linear(8,bias=false)) linear(2)")
quadra_cli_test(graph-curvature 0 "^wrote loss\\.npy, per_sample_loss\\.npy, grad\\.npy"
                curvature --model "${resmlp_spec}" --input-shape 784 --inputs ${cli_fixtures}/x784.npy
                --targets ${cli_fixtures}/y2.npy --out ${runs}/graph-curvature)
quadra_cli_test(graph-curvature-cnn 0 "^wrote loss\\.npy, per_sample_loss\\.npy, grad\\.npy"
                curvature --model "${resnet_spec}" --input-shape 1x28x28 --inputs ${cli_fixtures}/x784.npy
                --targets ${cli_fixtures}/y2.npy --out ${runs}/graph-curvature-cnn)
quadra_cli_test(graph-spectrum 0 "^# top 2 eigenvalues"
                spectrum --model "linear(8) tanh residual(linear(8) tanh linear(8)) linear(2)"
                --data moons:n=600,test=200,seed=3 --batch-size 32 --curvature hessian --top 2)
quadra_cli_test(graph-spec-shape-mismatch 1
                "^quadra: error: layer 1 'residual\\(linear\\(8\\)\\)' \\(token 2\\): its branch gives shape 8 but its shortcut \\(the identity\\) passes its input of shape 16"
                model describe --model "linear(16) residual(linear(8)) linear(2)" --input-shape 4)
quadra_cli_test(graph-train 0 "^budget of 2 steps reached"
                train ${moons} --set "model.spec=linear(16) tanh residual(linear(16) tanh linear(16)) linear(2)"
                --set optimizer.solver=cg --set optimizer.curvature=ggn --set train.max_steps=2 --set train.out=${runs}/graph-train --overwrite)
# Laplace on a residual network: K-FAC (the default) and lowrank structures, and the
# last layer's full block, whose Jacobians come from per-layer inputs and output adjoints.
set(laplace_graph --model "linear(8) tanh residual(linear(8) tanh linear(8), shortcut=linear(8,bias=false)) linear(2)"
    --data moons:n=600,test=200,seed=3 --normalize none --shift none --ood none --curvature-samples 200
    --validation-samples 100 --prior-grid 1e-2:1e4:7)
quadra_cli_test(graph-laplace-kfac 0 "^test +map +0\\.[0-9]+ &&& ^test +independent +0\\.[0-9]+"
                laplace ${laplace_graph} --precision float64)
quadra_cli_test(graph-laplace-lowrank 0 "^test +same-data +0\\.[0-9]+"
                laplace ${laplace_graph} --structure lowrank --rank 5 --predictive glm-mc --samples 50 --debiasing same-data)
quadra_cli_test(graph-laplace-last-layer 0 "^# structure last-layer-full on 18 parameters"
                laplace ${laplace_graph} --structure last-layer-full --prior-precision marglik)
